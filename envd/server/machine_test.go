package server

import (
	"strings"
	"testing"
)

func TestMachineIdentityCheck(t *testing.T) {
	entropy := make([]byte, 32)
	for _, tc := range []struct {
		id    machineIdentity
		guest bool
		ok    bool
	}{
		{machineIdentity{}, false, true},
		{machineIdentity{Hostname: "sbx-1", Entropy: entropy}, true, true},
		{machineIdentity{Hostname: "sbx-1"}, false, false},
		{machineIdentity{Hostname: "-x"}, true, false},
		{machineIdentity{Hostname: "a.b"}, true, false},
		{machineIdentity{Hostname: strings.Repeat("a", 64)}, true, false},
		{machineIdentity{Entropy: entropy[:8]}, true, false},
		{machineIdentity{Entropy: make([]byte, 513)}, true, false},
	} {
		if err := tc.id.check(tc.guest); (err == nil) != tc.ok {
			t.Errorf("%+v guest=%v: %v", tc.id, tc.guest, err)
		}
	}
}
