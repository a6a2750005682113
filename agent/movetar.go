package agent

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/sparse"
)

// A move's stream is a tar (PAX): the sandbox's record (moveRecordName),
// its template (moveTemplateName), the runtime's export below moveExportDir, and an end marker
// (moveEndName) without which a stream that was cut short at an entry's
// boundary would read as whole. Disk images are sparse: a regular file
// is sent as its data extents only, named in its header's PAX records
// (paxExtents: "offset:length,..."; paxSize: the file's size).

const (
	moveRecordName   = "sandbox.json"
	moveTemplateName = "template.json"
	moveExportDir    = "export"
	moveEndName      = "end"
	paxExtents       = "ROOST.extents"
	paxSize          = "ROOST.size"
)

// maxMoveRecord bounds the record's size in a stream.
const maxMoveRecord = 16 << 20

// writeMove writes rec, tpl and the tree dir to w.
func writeMove(w io.Writer, rec record, tpl moveTemplate, dir string) error {
	tw := tar.NewWriter(w)
	if err := writeJSONEntry(tw, moveRecordName, rec); err != nil {
		return err
	}
	if err := writeJSONEntry(tw, moveTemplateName, tpl); err != nil {
		return err
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." { // the reader makes the root
			return err
		}
		name := filepath.ToSlash(filepath.Join(moveExportDir, rel))
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o700, Typeflag: tar.TypeDir})
		case d.Type().IsRegular():
			return writeSparse(tw, name, p)
		default:
			return fmt.Errorf("%s: not a regular file or directory", rel)
		}
	})
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: moveEndName, Mode: 0o600, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	return tw.Close()
}

func writeJSONEntry(tw *tar.Writer, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = tw.Write(b)
	return err
}

// readJSONEntry reads the next entry, which must be name's, into v.
func readJSONEntry(tr *tar.Reader, name string, v any) error {
	h, err := tr.Next()
	if err != nil || h.Name != name || h.Size > maxMoveRecord {
		return fmt.Errorf("a move's stream has its %s here: %w", name, errdefs.ErrInvalid)
	}
	if err := json.NewDecoder(tr).Decode(v); err != nil {
		return fmt.Errorf("the move's %s: %v: %w", name, err, errdefs.ErrInvalid)
	}
	return nil
}

// writeSparse writes the file at p as entry name: its data extents.
func writeSparse(tw *tar.Writer, name, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	exts, err := sparse.Extents(f, st.Size())
	if err != nil {
		return err
	}
	var list []string
	var total int64
	for _, e := range exts {
		list = append(list, strconv.FormatInt(e.Off, 10)+":"+strconv.FormatInt(e.Len, 10))
		total += e.Len
	}
	h := &tar.Header{
		Name: name, Mode: int64(st.Mode().Perm()), Size: total, Typeflag: tar.TypeReg, Format: tar.FormatPAX,
		PAXRecords: map[string]string{paxExtents: strings.Join(list, ","), paxSize: strconv.FormatInt(st.Size(), 10)},
	}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	for _, e := range exts {
		if _, err := io.Copy(tw, io.NewSectionReader(f, e.Off, e.Len)); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// readMove reads a move's stream from r: the record, and the export into
// dir/moveExportDir (dir is made; the caller removes it). Names that leave
// dir, entries other than files and directories, extents that do not fit
// their file and a stream without its end marker are refused (ErrInvalid).
func readMove(r io.Reader, dir string) (rec record, tpl moveTemplate, err error) {
	tr := tar.NewReader(r)
	if err := readJSONEntry(tr, moveRecordName, &rec); err != nil {
		return rec, tpl, err
	}
	if rec.Version != recordVersion {
		return rec, tpl, fmt.Errorf("the move's record is of version %d, this agent's %d: %w", rec.Version, recordVersion, errdefs.ErrInvalid)
	}
	if err := readJSONEntry(tr, moveTemplateName, &tpl); err != nil {
		return rec, tpl, err
	}
	if err := os.MkdirAll(filepath.Join(dir, moveExportDir), 0o700); err != nil {
		return rec, tpl, err
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return rec, tpl, fmt.Errorf("the move's stream ended before its end: %w", errdefs.ErrInvalid)
		}
		if err != nil {
			return rec, tpl, fmt.Errorf("the move's stream: %v: %w", err, errdefs.ErrInvalid)
		}
		if h.Name == moveEndName {
			return rec, tpl, nil
		}
		if err := readEntry(tr, h, dir); err != nil {
			return rec, tpl, err
		}
	}
}

// readEntry writes the entry h (a directory, or a file of extents) below dir.
func readEntry(tr *tar.Reader, h *tar.Header, dir string) error {
	name := strings.TrimSuffix(h.Name, "/")
	if !filepath.IsLocal(name) || !strings.HasPrefix(name, moveExportDir+"/") {
		return fmt.Errorf("entry %q in a move's stream: %w", h.Name, errdefs.ErrInvalid)
	}
	p := filepath.Join(dir, name)
	switch h.Typeflag {
	case tar.TypeDir:
		return os.MkdirAll(p, 0o700)
	case tar.TypeReg:
		return readSparse(tr, h, p)
	}
	return fmt.Errorf("entry %q in a move's stream: type %c: %w", h.Name, h.Typeflag, errdefs.ErrInvalid)
}

func readSparse(tr *tar.Reader, h *tar.Header, p string) error {
	bad := func(why string) error {
		return fmt.Errorf("entry %q in a move's stream: %s: %w", h.Name, why, errdefs.ErrInvalid)
	}
	size, err := strconv.ParseInt(h.PAXRecords[paxSize], 10, 64)
	if err != nil || size < 0 {
		return bad("no size")
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.FileMode(h.Mode).Perm())
	if err != nil {
		return err
	}
	defer f.Close()
	var sent int64
	if list := h.PAXRecords[paxExtents]; list != "" {
		for _, e := range strings.Split(list, ",") {
			o, l, ok := strings.Cut(e, ":")
			off, err1 := strconv.ParseInt(o, 10, 64)
			n, err2 := strconv.ParseInt(l, 10, 64)
			if !ok || err1 != nil || err2 != nil || off < 0 || n < 0 || off+n > size || sent+n > h.Size {
				return bad("an extent outside the file")
			}
			got, err := io.Copy(io.NewOffsetWriter(f, off), io.LimitReader(tr, n))
			if err != nil {
				return fmt.Errorf("entry %q in a move's stream: %v: %w", h.Name, err, errdefs.ErrInvalid)
			}
			if got != n {
				return bad("cut short")
			}
			sent += n
		}
	}
	if sent != h.Size {
		return bad("extents and size disagree")
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Close()
}
