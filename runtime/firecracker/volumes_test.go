package firecracker

import (
	"errors"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// TestVolumesRefused: the driver mounts no volumes yet, and says so
// rather than booting a VM without them.
func TestVolumesRefused(t *testing.T) {
	if _, ok := any(New(Config{}, nil)).(runtime.VolumeMounter); ok {
		t.Fatal("the firecracker driver claims to mount volumes")
	}
	err := (&vmm{}).Validate(runtime.Spec{ID: "sb", Volumes: []runtime.VolumeMount{{ID: "v", Image: "/v.img", Path: "/data"}}})
	if !errors.Is(err, errdefs.ErrUnsupported) {
		t.Fatalf("validate with a volume: %v, want ErrUnsupported", err)
	}
}
