package namespace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// A move (runtime.Mover) writes a hibernated sandbox out in a capture's
// layout (fork_linux.go), which another host's driver takes in as a fork
// does, with three differences: the sandbox keeps its ID and boot id, the
// result stays hibernated until Restore, and the host files its processes
// held (the kept executables, which live in the data directory, not the
// sandbox's) travel in the export, under their content names:
//
//	capture.json   captureInfo, Boot set and each host file's Path a name here
//	images/        CRIU's images, as hibernation wrote them
//	layer-N.img    the sandbox's own disk (0) and its layers
//	<sha256>-<mode>  the host files

var _ runtime.Mover = (*Driver)(nil)

// Export implements runtime.Mover.
func (d *Driver) Export(_ context.Context, id, dir string) error {
	h, err := d.handles.Get(id)
	if err != nil {
		return err
	}
	if h.rec.Hibernation == nil {
		return fmt.Errorf("export sandbox %s: it is not hibernated: %w", id, errdefs.ErrConflict)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("export sandbox %s: %w", id, err)
	}
	if err := export(h.rec, dir); err != nil {
		_ = os.RemoveAll(dir)
		return fmt.Errorf("export sandbox %s: %w", id, err)
	}
	h.log.Info("sandbox exported", "dir", dir)
	return nil
}

func export(rec record, dir string) error {
	hib := *rec.Hibernation
	if err := linkImages(hib.Images, filepath.Join(dir, "images")); err != nil {
		return err
	}
	image, _, _ := paths(rec.StateDir)
	st, err := os.Stat(image)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	top := layerImage(dir, 0)
	if err := linkOrCopy(image, top); err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	layers, err := linkLayers(dir, rec.Layers, 1)
	if err != nil {
		return err
	}
	info := captureInfo{IDs: rec.IDs, DiskMB: int(st.Size() >> 20), BootID: rec.BootID != "", Boot: rec.BootID}
	if ap, err := netip.ParseAddrPort(rec.EnvdAddr); err == nil {
		info.Address = ap.Addr().String()
	}
	info.Layers = append([]diskLayer{{Image: top, IDs: rec.IDs}}, layers...)
	for i := range info.Layers {
		info.Layers[i].Image = filepath.Base(info.Layers[i].Image)
	}
	hib.Images = ""
	hib.Files = slices.Clone(hib.Files)
	for i, f := range hib.Files {
		name := filepath.Base(f.Path) // content-named by keepExe
		if err := linkOrCopy(f.Path, filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("host file %s: %w", f.Key, err)
		}
		hib.Files[i].Path = name
	}
	info.Hibernation = hib
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, captureFile), b, 0o600)
}

// linkImages makes dst a directory of links to CRIU's images in src (not
// its logs).
func linkImages(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("hibernation images: %w", err)
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		if err := linkOrCopy(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return fmt.Errorf("hibernation images: %w", err)
		}
	}
	return nil
}

// Import implements runtime.Mover: the export in dir becomes spec's
// sandbox as a capture becomes a fork (its own ID range, a new empty disk
// over the exported ones), hibernated, with the exported boot id and its
// former address, which Restore lends to its network while CRIU runs.
func (d *Driver) Import(_ context.Context, spec runtime.Spec, dir string) (runtime.DriverState, error) {
	if err := validate(spec); err != nil {
		return runtime.DriverState{}, err
	}
	info, err := readCapture(dir)
	if err != nil {
		return runtime.DriverState{}, fmt.Errorf("import sandbox %s: %w", spec.ID, err)
	}
	r, err := d.handles.Reserve(spec.ID)
	if err != nil {
		return runtime.DriverState{}, err
	}
	defer r.Release() // a failed import unwinds
	files, err := d.keepImported(dir, info.Hibernation.Files)
	if err != nil {
		return runtime.DriverState{}, fmt.Errorf("import sandbox %s: %w", spec.ID, err)
	}
	info.Hibernation.Files = files
	rec, err := d.forkRecord(r, spec, dir, info)
	if err != nil {
		return runtime.DriverState{}, fmt.Errorf("import sandbox %s: %w", spec.ID, err)
	}
	if info.Boot != "" {
		rec.BootID = info.Boot
	}
	inst, err := rec.instance()
	if err != nil {
		return runtime.DriverState{}, err
	}
	log := d.log.With("sandbox", spec.ID)
	r.Publish(&handle{rec: rec, log: log})
	log.Info("sandbox imported", "dir", dir, "from", info.Address)
	return inst.State, nil
}

// keepImported keeps the host files of an export in dir in the data
// directory, as keepExe keeps a local sandbox's, and returns them with
// their kept paths. Each is named by its content, which is checked.
func (d *Driver) keepImported(dir string, files []hostFile) ([]hostFile, error) {
	out := slices.Clone(files)
	for i, f := range out {
		p, err := d.keepNamed(filepath.Join(dir, f.Path), f.Path)
		if err != nil {
			return nil, fmt.Errorf("host file %s: %w", f.Key, err)
		}
		out[i].Path = p
	}
	return out, nil
}

// keepNamed copies src into the kept executables under name,
// "<sha256>-<mode>" as keepExe names them, unless it is there already,
// and returns its path. A name that is not src's content and mode is
// refused.
func (d *Driver) keepNamed(src, name string) (string, error) {
	sum, mode, ok := strings.Cut(name, "-")
	var perm os.FileMode
	if _, err := fmt.Sscanf(mode, "%o", &perm); err != nil || !ok || len(sum) != 2*sha256.Size || name != filepath.Base(name) || perm&^0o777 != 0 {
		return "", fmt.Errorf("name %q: %w", name, errdefs.ErrInvalid)
	}
	dir := filepath.Join(d.cfg.DataDir, "exe")
	kept := filepath.Join(dir, name)
	if _, err := os.Stat(kept); err == nil {
		return kept, nil
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", err
	}
	if err := d.traversable(dir); err != nil {
		return "", err
	}
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".exe-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(tmp, h), in)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	if hex.EncodeToString(h.Sum(nil)) != sum {
		return "", fmt.Errorf("%s: content is not its name's: %w", name, errdefs.ErrInvalid)
	}
	return kept, os.Rename(tmp.Name(), kept)
}
