package namespace

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Each sandbox's root maps to a host ID range of its own, so that a
// sandbox that escaped its mount namespace still could not touch another
// sandbox's files or signal its processes: range n holds host IDs
// HostIDBase+n*IDRange up to IDRange of them. Range 0 is the one every
// sandbox shared before ranges were per sandbox; it is never handed out
// again, since sandboxes of an older agent may still run in it.
const (
	HostIDBase = 1 << 30
	IDRange    = 65536
	// maxIDIndex keeps the last range below uid 2^32-1, which the kernel
	// reserves (-1).
	maxIDIndex = (1<<32 - 2 - HostIDBase - IDRange) / IDRange
)

// hostID is the first host ID of range n: the uid and gid of the root of
// the sandbox that holds it.
func hostID(n int) int { return HostIDBase + n*IDRange }

// idRanges hands out ID ranges. A range is claimed by a file in dir named
// for its number and holding the sandbox's ID, made with O_EXCL: the
// claim outlives the agent, so a restarted agent never gives a running
// sandbox's range to another before it has recovered it.
type idRanges struct {
	dir  string
	held map[int]string // range → sandbox, of the claims this driver made or saw
	// userns holds a user namespace per range, with that range's mapping,
	// for the idmapped mounts of its sandboxes' templates: ranges are
	// reused lowest first, so after the first sandboxes a create finds its
	// namespace here instead of starting a process to make one.
	userns map[int]*os.File
}

func newIDRanges(dir string) *idRanges {
	return &idRanges{dir: dir, held: map[int]string{}, userns: map[int]*os.File{}}
}

// claimLocked claims the lowest free range for the sandbox id.
func (r *idRanges) claimLocked(id string) (int, error) {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return 0, fmt.Errorf("id ranges: %w", err)
	}
	for n := 1; n <= maxIDIndex; n++ {
		if _, ok := r.held[n]; ok {
			continue
		}
		f, err := os.OpenFile(r.path(n), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue // a sandbox this driver has not recovered (yet) holds it
		}
		if err != nil {
			return 0, fmt.Errorf("claim id range: %w", err)
		}
		_, err = f.WriteString(id)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(r.path(n))
			return 0, fmt.Errorf("claim id range: %w", err)
		}
		r.held[n] = id
		return n, nil
	}
	return 0, errors.New("no free host id range")
}

// adoptLocked records that the recovered sandbox id holds range n.
func (r *idRanges) adoptLocked(n int, id string) {
	if n > 0 {
		r.held[n] = id
	}
}

// releaseLocked gives range n back, if the sandbox id holds it.
func (r *idRanges) releaseLocked(n int, id string) error {
	if n <= 0 {
		return nil
	}
	if owner, err := os.ReadFile(r.path(n)); err == nil && string(owner) != id {
		return nil // given to another sandbox since
	}
	delete(r.held, n)
	if err := os.Remove(r.path(n)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("release id range: %w", err)
	}
	return nil
}

// pruneLocked releases the claims of sandboxes not known.
func (r *idRanges) pruneLocked(known func(id string) bool) error {
	ents, err := os.ReadDir(r.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("id ranges: %w", err)
	}
	var errs []error
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		owner, err := os.ReadFile(r.path(n))
		if err != nil || known(strings.TrimSpace(string(owner))) {
			continue
		}
		if err := r.releaseLocked(n, string(owner)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (r *idRanges) path(n int) string { return filepath.Join(r.dir, strconv.Itoa(n)) }

// userns returns a user namespace with range n's mapping. Making one
// starts a process, so d.mu is not held meanwhile: creates of other
// ranges go on. Two creates of range n may both make one; the first kept
// wins and the other is closed.
func (d *Driver) userns(n int) (*os.File, error) {
	d.mu.Lock()
	f, ok := d.ids.userns[n]
	d.mu.Unlock()
	if ok {
		return f, nil
	}
	made, err := newUserns(d.cfg.Init, hostID(n))
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.ids.userns[n]; ok {
		made.Close()
		return f, nil
	}
	d.ids.userns[n] = made
	return made, nil
}

// idMap maps IDs 0..IDRange-1 of a sandbox to its host range from base.
func idMap(base int) []syscall.SysProcIDMap {
	return []syscall.SysProcIDMap{{ContainerID: 0, HostID: base, Size: IDRange}}
}

// writeIDMaps gives the user namespace of pid, made without ID maps, the
// map m for its gids and uids. Written by the agent, root of the parent
// namespace, so setgroups stays allowed in it.
func writeIDMaps(pid int, m []syscall.SysProcIDMap) error {
	var b []byte
	for _, e := range m {
		b = fmt.Appendf(b, "%d %d %d\n", e.ContainerID, e.HostID, e.Size)
	}
	for _, kind := range []string{"gid_map", "uid_map"} {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/%s", pid, kind), b, 0); err != nil {
			return fmt.Errorf("write %s: %w", kind, err)
		}
	}
	return nil
}

// newUserns returns a handle on a user namespace mapping root to the
// host ID base, for idmapped mounts.
func newUserns(initPath string, base int) (*os.File, error) {
	return holdUserns(initPath, idMap(base))
}
