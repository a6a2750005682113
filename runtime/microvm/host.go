package microvm

import (
	"fmt"
	"os"
	"path/filepath"
)

// GuestInit is the guest init binary a driver configured with init uses:
// init, or roost-guest next to the running executable.
func GuestInit(init string) string {
	if init != "" {
		return init
	}
	if exe, err := os.Executable(); err == nil {
		return filepath.Join(filepath.Dir(exe), "roost-guest")
	}
	return ""
}

// EgressLimit is the egress limit a driver configured with l and off
// applies: none when off, else l, else DefaultEgress.
func EgressLimit(l RateLimit, off bool) RateLimit {
	switch {
	case off:
		return RateLimit{}
	case l.Rate == 0:
		return DefaultEgress
	}
	return l
}

// MissingOnHost lists what this host lacks that every VM driver needs,
// for a driver's Probe: root, the guest init binary init, TAP devices.
func MissingOnHost(init string) []string {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "must run as root")
	}
	if st, err := os.Stat(init); err != nil || st.IsDir() {
		missing = append(missing, fmt.Sprintf("guest init %q not found (build cmd/roost-guest)", init))
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		missing = append(missing, "no /dev/net/tun (TAP devices)")
	}
	return missing
}
