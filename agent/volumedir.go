package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
)

// A volume directory on shared storage (docs/persistence.md, Volumes):
// every host whose --volume-dir is the same directory reports the same
// ID, read from VolumeDirIDFile in it, and the control plane may then
// move a volume between those hosts. The host that has a volume mounted
// releases it (ReleaseVolume) before another mounts it: an ext4 image
// mounted by two kernels at once is lost.

// VolumeDirIDFile, in the volume directory, holds the directory's ID.
// The first host to need it makes it; the others read it.
const VolumeDirIDFile = ".roost-volume-dir-id"

// maxVolumeDirID bounds the ID read from the file.
const maxVolumeDirID = 64

// dirID returns the volume directory's ID, making it when the directory
// has none. The file is written whole under a name of this host's, then
// linked to VolumeDirIDFile: a link never replaces a file (so of two
// hosts racing, one ID wins, even on NFS, where link is atomic) and a
// reader never sees a partial ID.
func (v *volumes) dirID() (string, error) {
	if err := os.MkdirAll(v.images, 0o700); err != nil {
		return "", fmt.Errorf("volume directory: %w", err)
	}
	path := filepath.Join(v.images, VolumeDirIDFile)
	for range 2 {
		id, err := readVolumeDirID(path)
		if !errors.Is(err, fs.ErrNotExist) {
			return id, err
		}
		if err := linkNewVolumeDirID(path); err != nil && !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return readVolumeDirID(path)
}

func readVolumeDirID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" || len(id) > maxVolumeDirID || strings.ContainsAny(id, " \t\n") {
		return "", fmt.Errorf("volume directory ID in %s: %q is not one (remove the file to make a new one): %w", path, id, errdefs.ErrInvalid)
	}
	return id, nil
}

func linkNewVolumeDirID(path string) error {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics on failure)
	id := "vd-" + hex.EncodeToString(b[:])
	tmp := fmt.Sprintf("%s.%s.new", path, id)
	if err := os.WriteFile(tmp, []byte(id+"\n"), 0o644); err != nil {
		return fmt.Errorf("make volume directory ID: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		return fmt.Errorf("make volume directory ID: %w", err)
	}
	return nil
}

// volumeDirID is the host's volume directory ID for HostInfo; "" (the
// host shares no volumes) when it cannot be read or made, which is
// logged.
func (m *Manager) volumeDirID() string {
	id, err := m.vols.dirID()
	if err != nil {
		m.log.Warn("volume directory ID: this host's volumes stay its own", "err", err)
	}
	return id
}

// release unmounts volume id from this host, keeping its image: not
// lazily, so a mount still in use (the content API) is
// errdefs.ErrConflict, as is a loop device the image still backs after
// it. A volume with no image is errdefs.ErrNotFound.
func (v *volumes) release(ctx context.Context, id string) error {
	if err := checkVolumeID(id); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	img, dir := v.image(id), v.dir(id)
	if _, err := os.Stat(img); err != nil {
		return fmt.Errorf("volume %s: %w", id, errdefs.ErrNotFound)
	}
	if ok, err := isMountPoint(dir); err != nil {
		return err
	} else if ok {
		if err := unix.Unmount(dir, 0); errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("volume %s is in use on host (its content API): try again: %w", id, errdefs.ErrConflict)
		} else if err != nil {
			return fmt.Errorf("unmount volume %s: %w", id, err)
		}
	}
	if loop := waitLoopFree(ctx, img); loop != "" {
		return fmt.Errorf("volume %s is still mounted on this host through %s: %w", id, loop, errdefs.ErrConflict)
	}
	v.log.Info("volume released", "volume", id)
	return nil
}

// ReleaseVolume unmounts volume id from this host for another host of
// its volume directory to mount; a sandbox of this host that mounts it
// and is not stopped is errdefs.ErrConflict naming it.
func (m *Manager) ReleaseVolume(ctx context.Context, id string) error {
	if holder, _ := m.volumeHolder(id, ""); holder != "" {
		return fmt.Errorf("volume %s is mounted by sandbox %s of this host: %w", id, holder, errdefs.ErrConflict)
	}
	return m.vols.release(ctx, id)
}

func (s *service) ReleaseVolume(ctx context.Context, req *connect.Request[hostagentv1.ReleaseVolumeRequest]) (*connect.Response[hostagentv1.ReleaseVolumeResponse], error) {
	if err := s.m.ReleaseVolume(ctx, req.Msg.GetVolumeId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.ReleaseVolumeResponse{}), nil
}
