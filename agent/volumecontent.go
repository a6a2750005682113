package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
)

// The volume content API (E2B's /volumecontent/{volumeID}/dir|file|path)
// on the agent's HTTP surface, behind the agent's own authentication: the
// control plane checks the volume's token and forwards the request here,
// to the host that has the volume. File bodies stream both ways, which
// is why this is HTTP and not a unary RPC.
//
// Every path is resolved in an os.Root of the volume's host mount: ".."
// and symbolic links cannot lead out of the volume. Owners and modes are
// the volume's own (uid 0 is a sandbox's root). New files default to
// mode 0644, directories to 0755, owner 0:0, as E2B's API describes.

// volumeEntry is E2B's VolumeEntryStat.
type volumeEntry struct {
	Name   string    `json:"name"`
	Type   string    `json:"type"` // file, directory, symlink or unknown
	Path   string    `json:"path"`
	Size   int64     `json:"size"`
	Mode   uint32    `json:"mode"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Atime  time.Time `json:"atime"`
	Mtime  time.Time `json:"mtime"`
	Ctime  time.Time `json:"ctime"`
	Target string    `json:"target,omitempty"`
}

// maxListDepth bounds a listing's recursion.
const maxListDepth = 64

// volumeContent serves /volumecontent/{id}/{op}.
func (m *Manager) volumeContent(w http.ResponseWriter, r *http.Request) {
	id, op := r.PathValue("id"), r.PathValue("op")
	q := r.URL.Query()
	p, rel := volumePath(q.Get("path"))
	root, err := m.volumeRoot(r.Context(), id)
	if err != nil {
		failContent(w, err)
		return
	}
	defer root.Close()
	c := contentOp{root: root, path: p, rel: rel, q: q}
	switch r.Method + " " + op {
	case "GET dir":
		err = c.list(w)
	case "POST dir":
		err = c.mkdir(w)
	case "GET file":
		err = c.read(w)
	case "PUT file":
		err = c.write(w, r.Body)
	case "GET path":
		err = c.stat(w)
	case "DELETE path":
		err = c.remove(w)
	case "PATCH path":
		err = c.patch(w, r.Body)
	default:
		err = fmt.Errorf("no volume content route %s %s: %w", r.Method, op, errdefs.ErrNotFound)
	}
	if err != nil {
		failContent(w, err)
	}
}

// volumePath cleans a path of the API (relative paths are from the
// volume's root) into the path shown and the one opened in the root.
func volumePath(p string) (shown, rel string) {
	shown = path.Clean("/" + strings.TrimSpace(p))
	rel = strings.TrimPrefix(shown, "/")
	if rel == "" {
		rel = "."
	}
	return shown, rel
}

// contentOp is one request on one volume.
type contentOp struct {
	root      *os.Root
	path, rel string
	q         map[string][]string
}

func (c contentOp) get(k string) string {
	if v := c.q[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c contentOp) list(w http.ResponseWriter) error {
	depth := 1
	if d := c.get("depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 || n > maxListDepth {
			return fmt.Errorf("depth %q: want 1 to %d: %w", d, maxListDepth, errdefs.ErrInvalid)
		}
		depth = n
	}
	st, err := c.root.Lstat(c.rel)
	if err != nil {
		return pathErr(c.path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("path %s is not a directory: %w", c.path, errdefs.ErrInvalid)
	}
	out := []volumeEntry{}
	if err := c.walk(c.rel, c.path, depth, &out); err != nil {
		return err
	}
	writeContentJSON(w, http.StatusOK, out)
	return nil
}

// walk appends the entries of dir (shown as shown) and, depth allowing,
// of its subdirectories; symbolic links are listed, never followed.
func (c contentOp) walk(dir, shown string, depth int, out *[]volumeEntry) error {
	f, err := c.root.Open(dir)
	if err != nil {
		return pathErr(shown, err)
	}
	ents, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		return pathErr(shown, err)
	}
	for _, e := range ents {
		rel, child := path.Join(dir, e.Name()), path.Join(shown, e.Name())
		ent, err := c.entry(rel, child)
		if err != nil {
			continue // gone meanwhile
		}
		*out = append(*out, ent)
		if depth > 1 && ent.Type == "directory" {
			if err := c.walk(rel, child, depth-1, out); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c contentOp) entry(rel, shown string) (volumeEntry, error) {
	st, err := c.root.Lstat(rel)
	if err != nil {
		return volumeEntry{}, pathErr(shown, err)
	}
	e := volumeEntry{Name: path.Base(shown), Path: shown, Size: st.Size(), Mode: uint32(st.Mode().Perm()), Mtime: st.ModTime().UTC()}
	if shown == "/" {
		e.Name = "/"
	}
	switch {
	case st.Mode().IsRegular():
		e.Type = "file"
	case st.IsDir():
		e.Type = "directory"
	case st.Mode()&fs.ModeSymlink != 0:
		e.Type = "symlink"
		e.Target, _ = c.root.Readlink(rel)
	default:
		e.Type = "unknown"
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		e.Mode = sys.Mode & 0o7777
		e.UID, e.GID = sys.Uid, sys.Gid
		e.Atime = time.Unix(sys.Atim.Unix()).UTC()
		e.Ctime = time.Unix(sys.Ctim.Unix()).UTC()
	}
	return e, nil
}

func (c contentOp) stat(w http.ResponseWriter) error {
	e, err := c.entry(c.rel, c.path)
	if err != nil {
		return err
	}
	writeContentJSON(w, http.StatusOK, e)
	return nil
}

// owner reads uid, gid and mode from the query (or a PATCH body), with
// the defaults given; mode takes the permission bits.
type owner struct {
	UID, GID, Mode *uint32
}

func (c contentOp) owner() (owner, error) {
	var o owner
	for _, f := range []struct {
		name string
		dst  **uint32
	}{{"uid", &o.UID}, {"gid", &o.GID}, {"mode", &o.Mode}} {
		v := c.get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return owner{}, fmt.Errorf("%s %q: want a number: %w", f.name, v, errdefs.ErrInvalid)
		}
		u := uint32(n)
		*f.dst = &u
	}
	return o, o.check()
}

func (o owner) check() error {
	if o.Mode != nil && *o.Mode > 0o7777 {
		return fmt.Errorf("mode %o: only permission bits (at most 07777): %w", *o.Mode, errdefs.ErrInvalid)
	}
	return nil
}

// apply sets what o gives on rel, and the defaults where it gives
// nothing and def is set.
func (o owner) apply(root *os.Root, rel string, defMode uint32, defaults bool) error {
	uid, gid, mode := -1, -1, defMode
	if defaults {
		uid, gid = 0, 0
	}
	if o.UID != nil {
		uid = int(*o.UID)
	}
	if o.GID != nil {
		gid = int(*o.GID)
	}
	if o.Mode != nil {
		mode = *o.Mode
	}
	if uid >= 0 || gid >= 0 {
		if err := root.Lchown(rel, uid, gid); err != nil {
			return err
		}
	}
	if mode != 0 || o.Mode != nil {
		return root.Chmod(rel, fs.FileMode(mode&0o777)|unixModeBits(mode))
	}
	return nil
}

// unixModeBits turns setuid, setgid and sticky bits into fs.FileMode's.
func unixModeBits(mode uint32) fs.FileMode {
	var m fs.FileMode
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func (c contentOp) mkdir(w http.ResponseWriter) error {
	o, err := c.owner()
	if err != nil {
		return err
	}
	if c.rel == "." {
		return fmt.Errorf("path /: the volume's root exists: %w", errdefs.ErrAlreadyExists)
	}
	force := c.get("force") == "true"
	if st, err := c.root.Lstat(c.rel); err == nil {
		if !force || !st.IsDir() {
			return fmt.Errorf("path %s already exists: %w", c.path, errdefs.ErrAlreadyExists)
		}
		return c.stat(w)
	}
	if force {
		err = c.mkdirParents(path.Dir(c.rel), o)
	}
	if err == nil {
		err = c.root.Mkdir(c.rel, 0o755)
	}
	if err != nil {
		return pathErr(c.path, err)
	}
	if err := o.apply(c.root, c.rel, 0o755, true); err != nil {
		return pathErr(c.path, err)
	}
	e, err := c.entry(c.rel, c.path)
	if err != nil {
		return err
	}
	writeContentJSON(w, http.StatusCreated, e)
	return nil
}

// mkdirParents makes the missing directories of rel, down from the root,
// with o's owner.
func (c contentOp) mkdirParents(rel string, o owner) error {
	if rel == "." {
		return nil
	}
	if st, err := c.root.Lstat(rel); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("/%s is not a directory: %w", rel, errdefs.ErrConflict)
		}
		return nil
	}
	if err := c.mkdirParents(path.Dir(rel), o); err != nil {
		return err
	}
	if err := c.root.Mkdir(rel, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return o.apply(c.root, rel, 0o755, true)
}

func (c contentOp) read(w http.ResponseWriter) error {
	f, err := c.root.OpenFile(c.rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return pathErr(c.path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return pathErr(c.path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("path %s is not a file: %w", c.path, errdefs.ErrNotFound)
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
	return nil
}

// write stores the body at path: a new file, or with force=true a
// replacement of an existing file. The data goes to a temporary file
// beside it first, so a reader never sees half a file.
func (c contentOp) write(w http.ResponseWriter, body io.Reader) error {
	o, err := c.owner()
	if err != nil {
		return err
	}
	if c.rel == "." {
		return fmt.Errorf("path /: the volume's root is a directory: %w", errdefs.ErrConflict)
	}
	if st, err := c.root.Lstat(c.rel); err == nil {
		switch {
		case st.IsDir():
			return fmt.Errorf("path %s is a directory: %w", c.path, errdefs.ErrConflict)
		case c.get("force") != "true":
			return fmt.Errorf("path %s already exists (force=true replaces it): %w", c.path, errdefs.ErrAlreadyExists)
		}
	}
	if st, err := c.root.Stat(path.Dir(c.rel)); err != nil || !st.IsDir() {
		return fmt.Errorf("path %s: its directory does not exist: %w", c.path, errdefs.ErrNotFound)
	}
	tmp := path.Join(path.Dir(c.rel), ".roost-upload-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := c.writeTemp(tmp, body, o); err != nil {
		_ = c.root.Remove(tmp)
		return err
	}
	if err := c.root.Rename(tmp, c.rel); err != nil {
		_ = c.root.Remove(tmp)
		return pathErr(c.path, err)
	}
	e, err := c.entry(c.rel, c.path)
	if err != nil {
		return err
	}
	writeContentJSON(w, http.StatusCreated, e)
	return nil
}

func (c contentOp) writeTemp(tmp string, body io.Reader, o owner) error {
	f, err := c.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return pathErr(c.path, err)
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("path %s: the volume is full: %w", c.path, errdefs.ErrExhausted)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", c.path, err)
	}
	if err := o.apply(c.root, tmp, 0o644, true); err != nil {
		return pathErr(c.path, err)
	}
	return nil
}

func (c contentOp) remove(w http.ResponseWriter) error {
	if c.rel == "." {
		return fmt.Errorf("path /: the volume's root cannot be removed: %w", errdefs.ErrInvalid)
	}
	if _, err := c.root.Lstat(c.rel); err != nil {
		return pathErr(c.path, err)
	}
	if err := c.root.RemoveAll(c.rel); err != nil {
		return pathErr(c.path, err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (c contentOp) patch(w http.ResponseWriter, body io.Reader) error {
	var o owner
	dec := json.NewDecoder(io.LimitReader(body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&struct {
		UID  **uint32 `json:"uid"`
		GID  **uint32 `json:"gid"`
		Mode **uint32 `json:"mode"`
	}{&o.UID, &o.GID, &o.Mode}); err != nil {
		return fmt.Errorf("metadata: want {uid, gid, mode}: %v: %w", err, errdefs.ErrInvalid)
	}
	if err := o.check(); err != nil {
		return err
	}
	if _, err := c.root.Lstat(c.rel); err != nil {
		return pathErr(c.path, err)
	}
	if err := o.apply(c.root, c.rel, 0, false); err != nil {
		return pathErr(c.path, err)
	}
	return c.stat(w)
}

// pathErr maps a filesystem error on shown to a category.
func pathErr(shown string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("path %s not found: %w", shown, errdefs.ErrNotFound)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("path %s already exists: %w", shown, errdefs.ErrAlreadyExists)
	case errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("path %s: %v: %w", shown, err, errdefs.ErrConflict)
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("path %s: the volume is full: %w", shown, errdefs.ErrExhausted)
	case errors.Is(err, syscall.ELOOP), escapes(err):
		return fmt.Errorf("path %s leads out of the volume: %w", shown, errdefs.ErrInvalid)
	}
	return fmt.Errorf("path %s: %w", shown, err)
}

// escapes says whether err is os.Root's own refusal, a path that leaves
// the root (through ".." or a symbolic link): a *fs.PathError that no
// system call made.
func escapes(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) && !errors.As(pe.Err, &errno)
}

func failContent(w http.ResponseWriter, err error) {
	errdefs.WriteHTTP(w, errdefs.HTTPStatus(err), err.Error())
}

func writeContentJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// volumeServer is what serves the volume content API on the agent's
// HTTP surface: the Manager.
type volumeServer interface {
	volumeContent(w http.ResponseWriter, r *http.Request)
}
