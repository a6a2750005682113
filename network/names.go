package network

import (
	"fmt"
	"path/filepath"
	"strconv"

	"roost.dev/roost/errdefs"
)

// prefix names everything this package creates on the host: namespaces
// roost-<id>, host links roost-<slot>, and (without the dash) the table.
const prefix = "roost-"

// netnsDir is where iproute2 keeps named network namespaces; a namespace
// bind-mounted there outlives every process in it (and the agent), and
// `ip netns exec roost-<id>` works on it.
const netnsDir = "/run/netns"

// maxIDLen keeps roost-<id> well inside NAME_MAX.
const maxIDLen = 200

// NetnsPath is the bind mount of sandbox id's network namespace.
func NetnsPath(id string) string {
	return filepath.Join(netnsDir, prefix+id)
}

// hostLink is the host side of slot's veth pair.
func hostLink(slot int) string { return prefix + strconv.Itoa(slot) }

func validID(id string) error {
	if id == "" || len(id) > maxIDLen {
		return fmt.Errorf("sandbox id %q: length must be 1..%d: %w", id, maxIDLen, errdefs.ErrInvalid)
	}
	for i, r := range id {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (i == 0 || r != '-' && r != '_' && r != '.') {
			return fmt.Errorf("sandbox id %q: want letters, digits, '-', '_' or '.', starting with a letter or digit: %w", id, errdefs.ErrInvalid)
		}
	}
	return nil
}
