//go:build !linux

package portforward

import (
	"errors"
	"net/netip"
)

func diagListeners() ([]netip.AddrPort, error) {
	return nil, errors.New("sock_diag is linux-only")
}
