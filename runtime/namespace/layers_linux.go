package namespace

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime/namespace/sandboxinit"
)

// A fork does not copy the disk of the sandbox it forks. The capture
// keeps one copy of that disk, taken while the sandbox was frozen, and
// every fork of it gets a link to that copy as a read-only layer between
// the template and an empty disk of its own: its overlay's lower layers
// are, top first, the captured disk's upper directory, the layers the
// forked sandbox had itself (a fork of a fork), and the template. Files
// on a layer belong to the host ID range of the sandbox that wrote them;
// the fork sees them through an idmapped mount that moves them into its
// own range.

// diskLayer is a read-only disk under a sandbox's own: a captured disk,
// linked into the sandbox's state directory.
type diskLayer struct {
	// Image is the layer's ext4 image, in the sandbox's state directory.
	Image string `json:"image"`
	// IDs is the host ID range its files belong to (that of the sandbox
	// whose disk it was).
	IDs int `json:"ids"`
}

// layerMount is where layer i of a sandbox is mounted, read-only, while
// its root is: on its own disk's root, which holds only its overlay's
// directories and is not the sandbox's to see, so that detaching the
// disk detaches the layers.
func layerMount(disk string, i int) string {
	return filepath.Join(disk, "layers", strconv.Itoa(i))
}

// layerImage is where a sandbox's state directory keeps layer i's image.
func layerImage(stateDir string, i int) string {
	return filepath.Join(stateDir, "layer-"+strconv.Itoa(i)+".img")
}

// mountLayers mounts each of layers read-only below disk (mounted) and
// returns, top first, idmapped mounts of their upper directories into the
// range ids, for an overlay's lower layers; unmount them with
// unmountLowers once the overlay is made.
func (d *Driver) mountLayers(layers []diskLayer, disk, stateDir string, ids int) ([]string, error) {
	var lowers []string
	for i, l := range layers {
		at := layerMount(disk, i)
		if err := mountImage(l.Image, at, true); err != nil {
			unmountLowers(lowers)
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		userns, err := idShiftUserns(d.cfg.Init, hostID(l.IDs), hostID(ids))
		if err != nil {
			unmountLowers(lowers)
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		lower := filepath.Join(stateDir, "lower-"+strconv.Itoa(i))
		err = mountLower(filepath.Join(at, "upper"), lower, userns)
		userns.Close()
		if err != nil {
			unmountLowers(lowers)
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
		lowers = append(lowers, lower)
	}
	return lowers, nil
}

func unmountLowers(lowers []string) {
	for _, l := range lowers {
		_ = unmount(l)
		_ = os.Remove(l)
	}
}

// idShiftUserns returns a user namespace mapping the host IDs from inside
// to those from outside (IDRange of them), for an idmapped mount that
// shows files of one sandbox's range as another's.
func idShiftUserns(initPath string, inside, outside int) (*os.File, error) {
	m := []syscall.SysProcIDMap{{ContainerID: inside, HostID: outside, Size: IDRange}}
	return holdUserns(initPath, m)
}

// linkLayers gives dir the images of layers, as layer-N.img from N =
// first on, and returns them there.
func linkLayers(dir string, layers []diskLayer, first int) ([]diskLayer, error) {
	var out []diskLayer
	for i, l := range layers {
		dst := layerImage(dir, first+i)
		if err := linkOrCopy(l.Image, dst); err != nil {
			return out, fmt.Errorf("layer %d: %w", i, err)
		}
		out = append(out, diskLayer{Image: dst, IDs: l.IDs})
	}
	return out, nil
}

// linkOrCopy makes dst a hard link to src (no copy), or a copy where a
// link cannot be made (another filesystem).
func linkOrCopy(src, dst string) error {
	err := os.Link(src, dst)
	if errors.Is(err, unix.EXDEV) {
		return copySparse(dst, src)
	}
	return err
}

// holdUserns returns a handle on a new user namespace with the ID map m
// (uids and gids alike), for idmapped mounts. The process that made it is
// gone; the open file keeps the namespace alive.
func holdUserns(initPath string, m []syscall.SysProcIDMap) (*os.File, error) {
	cmd := exec.Command(initPath)
	cmd.Env = []string{sandboxinit.ModeEnv + "=" + sandboxinit.ModeHold}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	// Cloned as the init is (vforkUserns): the map is written once it runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: vforkUserns | syscall.CLONE_NEWUSER}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start user namespace holder: %w", err)
	}
	err = writeIDMaps(cmd.Process.Pid, m)
	var f *os.File
	if err == nil {
		f, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid))
	}
	stdin.Close()
	_ = cmd.Wait()
	if err != nil {
		return nil, fmt.Errorf("open user namespace: %w", err)
	}
	return f, nil
}
