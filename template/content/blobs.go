package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
)

const (
	blobsSub   = "sha256"
	partialSub = "partial"
	tmpSub     = "tmp"
	dirPerm    = 0o700 // layers hold whole trees, /etc/shadow included
	blobPerm   = 0o644
	// staleTmp is the age at which Evict removes a temp file a crashed
	// Put left behind.
	staleTmp = 24 * time.Hour
)

// Blobs is a directory of blobs. Its methods are safe for concurrent use,
// also by several processes sharing the directory.
type Blobs struct {
	dir string
}

// NewBlobs returns the blobs kept in dir. It touches nothing on disk; the
// directories are made on first write.
func NewBlobs(dir string) *Blobs { return &Blobs{dir: dir} }

// Dir is the directory the blobs are kept in.
func (b *Blobs) Dir() string { return b.dir }

// Path is where blob d is, or would be. d must be a valid digest.
func (b *Blobs) Path(d Digest) string { return filepath.Join(b.dir, blobsSub, d.Hex()) }

func (b *Blobs) partialPath(d Digest) string { return filepath.Join(b.dir, partialSub, d.Hex()) }

// Has reports whether blob d is present.
func (b *Blobs) Has(d Digest) bool {
	_, err := b.Stat(d)
	return err == nil
}

// Stat returns the size of blob d, or an error wrapping
// errdefs.ErrNotFound (errdefs.ErrInvalid for a bad digest).
func (b *Blobs) Stat(d Digest) (int64, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return 0, err
	}
	st, err := os.Stat(b.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", d, err)
	}
	return st.Size(), nil
}

// Open opens blob d for reading and marks it used, or fails with an error
// wrapping errdefs.ErrNotFound. The caller closes the file; a blob evicted
// meanwhile stays readable through it.
func (b *Blobs) Open(d Digest) (*os.File, error) {
	if _, err := ParseDigest(string(d)); err != nil {
		return nil, err
	}
	f, err := os.Open(b.Path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d, err)
	}
	b.touch(d)
	return f, nil
}

// touch records a use of d for Evict: its mtime is its last use.
func (b *Blobs) touch(d Digest) {
	now := time.Now()
	_ = os.Chtimes(b.Path(d), now, now)
}

// Put stores the bytes of r as a blob and returns its descriptor. With
// want set, the bytes must have that digest: a mismatch wraps
// errdefs.ErrInvalid and keeps nothing; a blob already present is not
// read again (r is left unread). The blob appears atomically, synced to
// disk, once complete.
func (b *Blobs) Put(ctx context.Context, r io.Reader, want Digest) (Descriptor, error) {
	if want != "" {
		if _, err := ParseDigest(string(want)); err != nil {
			return Descriptor{}, err
		}
		if size, err := b.Stat(want); err == nil {
			b.touch(want)
			return Descriptor{Digest: want, Size: size}, nil
		}
	}
	if err := b.mkdirs(); err != nil {
		return Descriptor{}, err
	}
	tmp, err := os.CreateTemp(filepath.Join(b.dir, tmpSub), "put-*")
	if err != nil {
		return Descriptor{}, fmt.Errorf("put blob: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), &ctxReader{ctx: ctx, r: r})
	if err != nil {
		return Descriptor{}, fmt.Errorf("put blob: %w", err)
	}
	got := Digest(digestPrefix + hex.EncodeToString(h.Sum(nil)))
	if want != "" && got != want {
		return Descriptor{}, fmt.Errorf("blob has digest %s, want %s: %w", got, want, errdefs.ErrInvalid)
	}
	if err := b.commit(tmp, got); err != nil {
		return Descriptor{}, err
	}
	return Descriptor{Digest: got, Size: n}, nil
}

// commit syncs the verified file f and renames it to blob d's path.
func (b *Blobs) commit(f *os.File, d Digest) error {
	if err := f.Chmod(blobPerm); err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	// A rename over a blob another writer committed meanwhile replaces
	// identical bytes.
	if err := os.Rename(f.Name(), b.Path(d)); err != nil {
		return fmt.Errorf("put blob %s: %w", d, err)
	}
	syncDir(filepath.Join(b.dir, blobsSub))
	return nil
}

// PutWritten stores as a blob what write writes, streamed (never held
// whole), and returns its descriptor; write's error, when it fails, is
// the call's.
func (b *Blobs) PutWritten(ctx context.Context, write func(io.Writer) error) (Descriptor, error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err)
		done <- err
	}()
	desc, err := b.Put(ctx, pr, "")
	pr.CloseWithError(errors.New("blob writer: reader gone")) // ends write if Put stopped early
	werr := <-done
	if err != nil { // holds werr when the writer failed first
		return Descriptor{}, err
	}
	if werr != nil {
		return Descriptor{}, werr
	}
	return desc, nil
}

// PutBytes stores data as a blob.
func (b *Blobs) PutBytes(ctx context.Context, data []byte) (Descriptor, error) {
	return b.Put(ctx, bytes.NewReader(data), FromBytes(data))
}

// PutManifest stores m's canonical encoding and returns its digest.
func (b *Blobs) PutManifest(ctx context.Context, m Manifest) (Digest, error) {
	data, d := m.Encode()
	if _, err := b.Put(ctx, bytes.NewReader(data), d); err != nil {
		return "", err
	}
	return d, nil
}

// Manifest reads and verifies manifest d.
func (b *Blobs) Manifest(d Digest) (Manifest, error) {
	f, err := b.Open(d)
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifestSize+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest %s: %w", d, err)
	}
	m, err := DecodeManifestDigest(data, d)
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	return m, nil
}

// Delete removes blob d; a missing blob is not an error.
func (b *Blobs) Delete(d Digest) error {
	if _, err := ParseDigest(string(d)); err != nil {
		return err
	}
	if err := os.Remove(b.Path(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", d, err)
	}
	return nil
}

// blobInfo is a blob on disk with its last use.
type blobInfo struct {
	Descriptor
	used time.Time
}

func (b *Blobs) list() ([]blobInfo, error) {
	entries, err := os.ReadDir(filepath.Join(b.dir, blobsSub))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	out := make([]blobInfo, 0, len(entries))
	for _, e := range entries {
		d, err := ParseDigest(digestPrefix + e.Name())
		if err != nil || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue // deleted meanwhile
		}
		out = append(out, blobInfo{Descriptor{d, info.Size()}, info.ModTime()})
	}
	return out, nil
}

// List returns every blob, sorted by digest.
func (b *Blobs) List() ([]Descriptor, error) {
	infos, err := b.list()
	if err != nil {
		return nil, err
	}
	out := make([]Descriptor, len(infos))
	for i, in := range infos {
		out[i] = in.Descriptor
	}
	slices.SortFunc(out, func(x, y Descriptor) int { return strings.Compare(string(x.Digest), string(y.Digest)) })
	return out, nil
}

// Usage is the total size of the blobs in bytes (partial downloads not
// counted).
func (b *Blobs) Usage() (int64, error) {
	infos, err := b.list()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, in := range infos {
		total += in.Size
	}
	return total, nil
}

// Evict deletes blobs, least recently used first, until their total size
// is at most budget bytes; keep (may be nil) names blobs never to delete
// (those in use). It also removes temp files and partial downloads left
// for a day. It
// returns the bytes freed; staying over budget with only kept blobs left
// is not an error.
func (b *Blobs) Evict(budget int64, keep func(Digest) bool) (freed int64, err error) {
	b.sweepTmp()
	infos, err := b.list()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, in := range infos {
		total += in.Size
	}
	slices.SortFunc(infos, func(x, y blobInfo) int { return x.used.Compare(y.used) })
	for _, in := range infos {
		if total <= budget {
			break
		}
		if keep != nil && keep(in.Digest) {
			continue
		}
		if err := b.Delete(in.Digest); err != nil {
			return freed, err
		}
		total -= in.Size
		freed += in.Size
	}
	return freed, nil
}

// sweepTmp removes what crashed writers left: temp files, and partial
// downloads nobody resumed for staleTmp (a download in progress writes,
// which keeps its mtime recent).
func (b *Blobs) sweepTmp() {
	for _, sub := range []string{tmpSub, partialSub} {
		dir := filepath.Join(b.dir, sub)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTmp {
				_ = os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
}

func (b *Blobs) mkdirs() error {
	for _, sub := range []string{blobsSub, partialSub, tmpSub} {
		if err := os.MkdirAll(filepath.Join(b.dir, sub), dirPerm); err != nil {
			return fmt.Errorf("blobs dir: %w", err)
		}
	}
	return nil
}

func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		_ = f.Sync()
		f.Close()
	}
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
