package qemu

import (
	"strconv"
	"strings"

	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/microvm"
)

// Volumes (docs/persistence.md): each volume's ext4 image is a raw
// virtio block device of the VM with a serial the guest init finds it by
// (microvm.VolumeSerial), read-only to QEMU when the mount is. The
// agent opens the image for QEMU, as it opens the disk (confinedArgs);
// the devices are on the saved command line, so a hibernated VM restores
// and a halted one boots with its volumes.

var _ runtime.VolumeMounter = (*Driver)(nil)

// VolumeForm implements runtime.VolumeMounter: QEMU takes a volume's
// image, unmounted on the host.
func (d *Driver) VolumeForm() runtime.VolumeForm { return runtime.VolumeImage }

// volumeArgs are the -drive and -device arguments of the volumes.
func volumeArgs(vs []runtime.VolumeMount) []string {
	var out []string
	for i, v := range vs {
		id := "vol" + strconv.Itoa(i)
		drive := "id=" + id + ",file=" + strings.ReplaceAll(v.Image, ",", ",,") + ",format=raw,if=none,discard=unmap,file.locking=off"
		if v.ReadOnly {
			drive += ",read-only=on"
		}
		out = append(out, "-drive", drive, "-device", "virtio-blk-device,drive="+id+",serial="+microvm.VolumeSerial(i))
	}
	return out
}
