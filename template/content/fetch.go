package content

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"time"

	"syscall"

	"roost.dev/roost/errdefs"
)

// Source is where Fetch reads blobs from.
type Source interface {
	// Open returns blob d's bytes from offset on. Errors wrap errdefs
	// categories (ErrNotFound for a blob the source lacks).
	Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, error)
}

// fetchTries bounds the attempts of one Fetch: a source that broke off
// is asked again from where it stopped as long as each try brought bytes.
const fetchTries = 5

// Fetch copies blob d from src into b unless it is present. The download
// goes to <dir>/partial/<hex> and resumes there, in this call (when the
// source breaks off after sending something) or a later one (after a
// crash or a cancelled ctx). The bytes are verified against d.Digest and
// d.Size (when not 0): a mismatch deletes the partial download and wraps
// errdefs.ErrInvalid. Concurrent fetches of one blob, also from other
// processes, download it once. progress (may be nil) is called with the
// bytes done and d.Size as bytes arrive.
func (b *Blobs) Fetch(ctx context.Context, d Descriptor, src Source, progress func(done, total int64)) error {
	if _, err := ParseDigest(string(d.Digest)); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("fetch blob %s: size %d: %w", d.Digest, d.Size, errdefs.ErrInvalid)
	}
	if b.Has(d.Digest) {
		return nil
	}
	if err := b.mkdirs(); err != nil {
		return err
	}
	f, err := lockPartial(ctx, b.partialPath(d.Digest))
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", d.Digest, err)
	}
	defer f.Close() // releases the lock
	if b.Has(d.Digest) {
		_ = os.Remove(f.Name()) // the other fetcher made it; this file is new
		return nil
	}
	err = b.fetchLocked(ctx, f, d, src, progress)
	if errors.Is(err, errdefs.ErrInvalid) {
		_ = os.Remove(f.Name())
	}
	if err != nil {
		return fmt.Errorf("fetch blob %s: %w", d.Digest, err)
	}
	return nil
}

// fetchLocked completes the partial download f, which the caller has
// locked, and commits it.
func (b *Blobs) fetchLocked(ctx context.Context, f *os.File, d Descriptor, src Source, progress func(done, total int64)) error {
	h := sha256.New()
	done, err := hashPartial(f, h, d.Size)
	if err != nil {
		return err
	}
	for try := 1; d.Size == 0 || done < d.Size; try++ {
		n, err := fetchFrom(ctx, f, h, d, done, src, progress)
		done += n
		if err == nil {
			break
		}
		if n == 0 || try == fetchTries || ctx.Err() != nil || errors.Is(err, errdefs.ErrInvalid) {
			_ = f.Sync() // keep what arrived for the next call
			return err
		}
	}
	got := Digest(digestPrefix + hex.EncodeToString(h.Sum(nil)))
	if got != d.Digest {
		return fmt.Errorf("downloaded %d bytes with digest %s: %w", done, got, errdefs.ErrInvalid)
	}
	return b.commit(f, d.Digest)
}

// hashPartial feeds what f already holds into h and returns its length;
// a partial file longer than the blob is started afresh.
func hashPartial(f *os.File, h hash.Hash, size int64) (int64, error) {
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, fmt.Errorf("read partial download: %w", err)
	}
	if size > 0 && n > size {
		h.Reset()
		if err := f.Truncate(0); err != nil {
			return 0, fmt.Errorf("truncate partial download: %w", err)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return 0, err
		}
		return 0, nil
	}
	return n, nil
}

// fetchFrom appends src's bytes of d from offset to f and h; it returns
// how many it appended. A source that sends more than d.Size fails with
// errdefs.ErrInvalid.
func fetchFrom(ctx context.Context, f *os.File, h hash.Hash, d Descriptor, offset int64, src Source, progress func(done, total int64)) (int64, error) {
	rc, err := src.Open(ctx, d.Digest, offset)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	var r io.Reader = &ctxReader{ctx: ctx, r: rc}
	if d.Size > 0 {
		r = io.LimitReader(r, d.Size-offset+1) // one more to see an overlong blob
	}
	w := &progressWriter{w: io.MultiWriter(f, h), done: offset, total: d.Size, fn: progress}
	n, err := io.Copy(w, r)
	if err != nil {
		return n, err
	}
	if d.Size > 0 && offset+n > d.Size {
		return n, fmt.Errorf("source sent more than the blob's %d bytes: %w", d.Size, errdefs.ErrInvalid)
	}
	if d.Size > 0 && offset+n < d.Size {
		return n, fmt.Errorf("source ended after %d of %d bytes: %w", offset+n, d.Size, io.ErrUnexpectedEOF)
	}
	return n, nil
}

type progressWriter struct {
	w           io.Writer
	done, total int64
	fn          func(done, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	if p.fn != nil && n > 0 {
		p.fn(p.done, p.total)
	}
	return n, err
}

// lockPoll is how often a waiter retries a held lock (flock cannot be
// interrupted by a context).
const lockPoll = 50 * time.Millisecond

// lockPartial opens (creating) the partial download at path and locks
// it, waiting while ctx lasts. A file renamed or removed by its holder
// before the waiter got the lock is not the partial download any more:
// the waiter opens the path again.
func lockPartial(ctx context.Context, path string) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, blobPerm)
		if err != nil {
			return nil, fmt.Errorf("open partial download: %w", err)
		}
		if err := flockWait(ctx, f); err != nil {
			f.Close()
			return nil, err
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		now, err := os.Stat(path)
		if err == nil && os.SameFile(held, now) {
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
}

func flockWait(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock partial download: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for another download: %w", context.Cause(ctx))
		case <-time.After(lockPoll):
		}
	}
}
