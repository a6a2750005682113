package microvm

import (
	"os"
	"testing"
)

// TestCheckKVM runs the probe against this host's KVM device: where the
// device is missing or broken the answer must be an error that says so,
// never a hang or a crash.
func TestCheckKVM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for /dev/kvm")
	}
	err := CheckKVM("/dev/kvm")
	t.Logf("CheckKVM(/dev/kvm): %v", err)
	if err := CheckKVM("/nonexistent/kvm"); err == nil {
		t.Error("a missing device counts as usable KVM")
	}
}
