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
		{machineIdentity{Entropy: entropy}, false, false},
		{machineIdentity{Hostname: "-x"}, true, false},
		{machineIdentity{Hostname: "a.b"}, true, false},
		{machineIdentity{Hostname: strings.Repeat("a", 64)}, true, false},
		{machineIdentity{Entropy: entropy[:8]}, true, false},
		{machineIdentity{Entropy: make([]byte, 513)}, true, false},
	} {
		if err := tc.id.check(tc.guest, tc.guest); (err == nil) != tc.ok {
			t.Errorf("%+v guest=%v: %v", tc.id, tc.guest, err)
		}
	}
	// A namespace sandbox's envd sets its hostname, never the kernel's
	// random state.
	if err := (machineIdentity{Hostname: "sbx-1"}).check(false, true); err != nil {
		t.Errorf("hostname with its own: %v", err)
	}
	if err := (machineIdentity{Hostname: "sbx-1", Entropy: entropy}).check(false, true); err == nil {
		t.Error("entropy from an envd that is not a guest's: accepted")
	}
}
