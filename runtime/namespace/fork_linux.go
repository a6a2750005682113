package namespace

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/handles"
	"roost.dev/roost/runtime/proc"
	"roost.dev/roost/wire"
)

// A capture (runtime.Forker) is CRIU's dump of a running sandbox, taken
// with --leave-running, and a copy of its disk, both taken while its
// cgroup is frozen so that they agree. A fork restores the dump as
// hibernation does, in a new sandbox: its own ID range (the dump's user
// namespace map is rewritten to it), network namespace, cgroup, boot id
// and an empty disk over the captured one (see diskLayer).
//
// A capture directory holds:
//
//	capture.json   captureInfo
//	images/        CRIU's images
//	layer-N.img    the captured disk (0) and the sandbox's own layers

// captureFile names a capture's description in its directory.
const captureFile = "capture.json"

// captureInfo describes a capture.
type captureInfo struct {
	// IDs is the captured sandbox's host ID range, which its images name.
	IDs int `json:"ids"`
	// Layers are the capture's disks, top first, with the ID range of
	// each; Image is a name in the capture's directory.
	Layers []diskLayer `json:"layers"`
	// Hibernation is what a restore needs besides the images; its
	// Images is empty.
	Hibernation hibernation `json:"hibernation"`
	// DiskMB is the size of the captured sandbox's own disk, which a fork's
	// own is.
	DiskMB int `json:"diskMB"`
	// BootID says whether the sandbox had a boot id of its own, as the
	// images' mounts do.
	BootID bool `json:"bootId"`
	// Boot is that boot id itself in an export (a moved sandbox goes on
	// with its boot); a capture for forks leaves it empty, as each fork
	// gets its own.
	Boot string `json:"boot,omitempty"`
	// Address is the captured sandbox's address, which the connections it
	// had then (envd's clients) are bound to.
	Address string `json:"address,omitempty"`
}

var _ runtime.Forker = (*Driver)(nil)

// Capture implements runtime.Forker. The sandbox (running or paused) is
// frozen for the time the dump and the disk copy take, and then left as
// it was. A sandbox CRIU cannot dump is refused with ErrConflict (it is
// this sandbox's state) and CRIU's reason; a host without CRIU, with
// ErrUnsupported.
func (d *Driver) Capture(ctx context.Context, id, dir string) error {
	h, err := d.running(id)
	if err != nil {
		return err
	}
	criu, err := d.criu()
	if err != nil {
		return fmt.Errorf("capture sandbox %s: %w", id, err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("capture sandbox %s: %w", id, err)
	}
	err = d.capture(ctx, criu, h, dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("capture sandbox %s: %w", id, err)
	}
	return nil
}

func (d *Driver) capture(ctx context.Context, criu string, h *handle, dir string) error {
	hib, args, err := d.dumpPlan(h)
	if errors.Is(err, errdefs.ErrUnsupported) { // a file from outside the sandbox
		return fmt.Errorf("this sandbox cannot be captured: %v: %w", err, errdefs.ErrConflict)
	}
	if err != nil {
		return err
	}
	hib.Images = filepath.Join(dir, "images")
	t0 := time.Now()
	frozen := h.group.Frozen()
	if err := h.group.Freeze(ctx); err != nil {
		return fmt.Errorf("freeze: %w", err)
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if frozen {
			_ = h.group.Freeze(tctx)
		} else if err := h.group.Thaw(tctx); err != nil {
			h.log.Error("sandbox not thawed after its capture", "err", err)
		}
	}()
	image, disk, _ := paths(h.rec.StateDir)
	if err := syncDisk(disk); err != nil {
		return err
	}
	info := captureInfo{IDs: h.rec.IDs, BootID: h.rec.BootID != ""}
	if ap, err := netip.ParseAddrPort(h.rec.EnvdAddr); err == nil {
		info.Address = ap.Addr().String()
	}
	top := layerImage(dir, 0)
	if err := copySparse(top, image); err != nil {
		return fmt.Errorf("copy disk: %w", err)
	}
	if st, err := os.Stat(image); err == nil {
		info.DiskMB = int(st.Size() >> 20)
	}
	layers, err := linkLayers(dir, h.rec.Layers, 1)
	if err != nil {
		return err
	}
	info.Layers = append([]diskLayer{{Image: top, IDs: h.rec.IDs}}, layers...)
	for i := range info.Layers {
		info.Layers[i].Image = filepath.Base(info.Layers[i].Image)
	}
	if err := d.dump(ctx, criu, h, hib, append(args, "--leave-running")); err != nil {
		return fmt.Errorf("this sandbox cannot be captured: criu dump: %s: %w", err, errdefs.ErrConflict)
	}
	info.Hibernation = *hib
	info.Hibernation.Images = ""
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, captureFile), b, 0o600); err != nil {
		return err
	}
	h.log.Info("sandbox captured", "took", time.Since(t0), "dir", dir)
	return nil
}

// syncDisk writes what the sandbox's disk, mounted at disk, holds in
// memory to its image.
func syncDisk(disk string) error {
	fd, err := unix.Open(disk, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync disk: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync disk: %w", err)
	}
	return nil
}

// Fork implements runtime.Forker.
func (d *Driver) Fork(ctx context.Context, spec runtime.Spec, dir string) (runtime.Instance, error) {
	if err := validate(spec); err != nil {
		return runtime.Instance{}, err
	}
	info, err := readCapture(dir)
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("fork into sandbox %s: %w", spec.ID, err)
	}
	lim := info.Hibernation.Limits
	if m := spec.Limits.MemoryMB; m != 0 && m != lim.MemoryMB {
		return runtime.Instance{}, fmt.Errorf("fork into sandbox %s: memory %d MiB, but the captured sandbox has %d MiB: %w", spec.ID, m, lim.MemoryMB, errdefs.ErrInvalid)
	}
	criu, err := d.criu()
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("fork into sandbox %s: %w", spec.ID, err)
	}
	r, err := d.handles.Reserve(spec.ID)
	if err != nil {
		return runtime.Instance{}, err
	}
	defer r.Release() // a failed fork unwinds
	t0 := time.Now()
	rec, err := d.forkRecord(r, spec, dir, info)
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("fork into sandbox %s: %w", spec.ID, err)
	}
	log := d.log.With("sandbox", spec.ID)
	inst, err := d.restoreInto(ctx, r, criu, spec, rec, log)
	if err != nil {
		return runtime.Instance{}, fmt.Errorf("fork into sandbox %s: %w", spec.ID, err)
	}
	if err := setHostname(inst.Pid, initConfig(spec, "").Hostname); err != nil {
		_ = d.Destroy(context.WithoutCancel(ctx), spec.ID)
		return runtime.Instance{}, fmt.Errorf("fork into sandbox %s: %w", spec.ID, err)
	}
	log.Info("sandbox forked", "pid", inst.Pid, "took", time.Since(t0), "capture", dir)
	return inst, nil
}

// lendFormerAddress puts rec's former address (its EnvdAddr's: a
// captured or moved sandbox's) on the loopback of spec's network
// namespace while CRIU restores rec there, when spec's address is
// another: the connections the sandbox had come back closed
// (--tcp-close), but bound to their address, which must be there. The
// returned func takes it back.
func lendFormerAddress(spec runtime.Spec, rec record) (func(), error) {
	ap, err := netip.ParseAddrPort(rec.EnvdAddr)
	if err != nil || ap.Addr() == spec.Network.Address.Addr() {
		return func() {}, nil
	}
	return lendAddress(spec.Network.Netns, ap.Addr())
}

// lendAddress puts addr on the loopback of network namespace netns; the
// returned func takes it back.
func lendAddress(netns string, addr netip.Addr) (func(), error) {
	onLoopback := func(change func(netlink.Link, *netlink.Addr) error) error {
		return proc.InNetns(netns, func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return change(lo, &netlink.Addr{IPNet: hostNet(addr)})
		})
	}
	if err := onLoopback(netlink.AddrAdd); err != nil {
		return nil, fmt.Errorf("lend the captured sandbox's address %s: %w", addr, err)
	}
	return func() { _ = onLoopback(netlink.AddrDel) }, nil
}

// hostNet is addr as a one-address network.
func hostNet(addr netip.Addr) *net.IPNet {
	return &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(addr.BitLen(), addr.BitLen())}
}

// readCapture reads the description of the capture in dir.
func readCapture(dir string) (captureInfo, error) {
	var info captureInfo
	b, err := os.ReadFile(filepath.Join(dir, captureFile))
	if errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("no capture in %s: %w", dir, errdefs.ErrNotFound)
	}
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal(b, &info); err != nil {
		return info, fmt.Errorf("capture %s: %w", dir, err)
	}
	if len(info.Layers) == 0 {
		return info, fmt.Errorf("capture %s has no disk: %w", dir, errdefs.ErrInvalid)
	}
	for i, l := range info.Layers {
		if l.Image != filepath.Base(l.Image) || strings.HasPrefix(l.Image, ".") {
			return info, fmt.Errorf("capture %s: layer %q: %w", dir, l.Image, errdefs.ErrInvalid)
		}
		info.Layers[i].Image = filepath.Join(dir, l.Image)
	}
	return info, nil
}

// forkRecord makes what a fork of the capture info in dir starts from, in
// the new sandbox's state directory: its ID range, its own empty disk, its
// layers and its copy of the images (links, and the user namespace map
// rewritten to its range). What it made is undone through r if the fork
// fails.
func (d *Driver) forkRecord(r *handles.Reservation[handle], spec runtime.Spec, dir string, info captureInfo) (record, error) {
	ids, err := d.claimIDs(r, spec.ID)
	if err != nil {
		return record{}, err
	}
	if err := d.newDisk(r, spec.StateDir, ids, info.DiskMB); err != nil {
		return record{}, err
	}
	layers, err := linkLayers(spec.StateDir, info.Layers, 0)
	r.OnFail(func() {
		for _, l := range layers {
			os.Remove(l.Image)
		}
	})
	if err != nil {
		return record{}, err
	}
	hib := info.Hibernation
	hib.Images = imagesDir(spec.StateDir)
	if err := forkImages(filepath.Join(dir, "images"), hib.Images, hostID(info.IDs), hostID(ids)); err != nil {
		return record{}, err
	}
	r.OnFail(func() { os.RemoveAll(hib.Images) })
	rec := record{ID: spec.ID, StateDir: spec.StateDir, IDs: ids, Layers: layers, Hibernation: &hib, Started: time.Now().UTC()}
	if a, err := netip.ParseAddr(info.Address); err == nil {
		rec.EnvdAddr = netip.AddrPortFrom(a, wire.EnvdPort).String()
	}
	if info.BootID {
		if rec.BootID, err = newBootID(); err != nil {
			return record{}, err
		}
	}
	return rec, nil
}

// forkImages makes dst, a fork's copy of the capture's images in src:
// links to them, but for the user namespace's, which is rewritten from
// the captured sandbox's host IDs to the fork's. Like a hibernated
// sandbox's, dst is open to the fork's group (host ID to).
func forkImages(src, dst string, from, to int) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("capture images: %w", err)
	}
	if err := os.Mkdir(dst, 0o750); err != nil {
		return err
	}
	if err := os.Chown(dst, 0, to); err != nil {
		return err
	}
	shifted := false
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || strings.HasSuffix(name, ".log") {
			continue
		}
		if strings.HasPrefix(name, "userns-") {
			if err := shiftUsernsImage(filepath.Join(src, name), filepath.Join(dst, name), from, to, IDRange); err != nil {
				return err
			}
			shifted = true
			continue
		}
		if err := linkOrCopy(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("capture images: %w", err)
		}
	}
	if !shifted {
		return fmt.Errorf("capture images: no user namespace image in %s: %w", src, errdefs.ErrInvalid)
	}
	return nil
}
