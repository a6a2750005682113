package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"roost.dev/roost/client"
	"roost.dev/roost/template/buildcontext"
	"roost.dev/roost/template/content"
)

// uploadFile puts a packed file to the files route of a template unless
// the control plane has it already, showing progress on w, and returns
// its digest for the build spec.
func uploadFile(ctx context.Context, w io.Writer, c *client.Client, templateID, what string, p *buildcontext.Packed) (content.Digest, error) {
	digest, err := content.ParseDigest("sha256:" + p.SHA256)
	if err != nil {
		return "", err
	}
	up, err := c.TemplateFile(ctx, templateID, p.SHA256)
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", what, err)
	}
	if up.Present {
		fmt.Fprintf(w, "%s (%s, %s) is uploaded already\n", what, humanBytes(p.Size), shortDigest(p.SHA256))
		return digest, nil
	}
	if up.URL == "" {
		return "", fmt.Errorf("upload %s: the API gave no upload URL", what)
	}
	bar := newByteProgress(w, "uploading "+what, p.Size)
	err = c.UploadTemplateFile(ctx, up.URL, io.TeeReader(p.File, bar), p.Size)
	bar.done(err)
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", what, err)
	}
	return digest, nil
}

// byteProgress shows bytes moved and the rate: a line rewritten in place
// on a terminal, a line every plainEvery otherwise.
type byteProgress struct {
	w     io.Writer
	what  string
	total int64
	tty   bool
	start time.Time

	mu    sync.Mutex // guards n and shown
	n     int64
	shown time.Time
}

const (
	ttyEvery   = 100 * time.Millisecond
	plainEvery = 5 * time.Second
)

func newByteProgress(w io.Writer, what string, total int64) *byteProgress {
	b := &byteProgress{w: w, what: what, total: total, tty: isTerminal(w), start: time.Now()}
	b.shown = b.start
	if !b.tty {
		fmt.Fprintf(w, "%s (%s)\n", what, humanBytes(total))
	}
	return b
}

func (b *byteProgress) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n += int64(len(p))
	every := plainEvery
	if b.tty {
		every = ttyEvery
	}
	if now := time.Now(); now.Sub(b.shown) >= every {
		b.shown = now
		b.showLocked(now)
	}
	return len(p), nil
}

func (b *byteProgress) showLocked(now time.Time) {
	line := fmt.Sprintf("%s: %s / %s", b.what, humanBytes(b.n), humanBytes(b.total))
	if b.total > 0 {
		line += fmt.Sprintf(" (%d%%)", b.n*100/b.total)
	}
	line += ", " + rate(b.n, now.Sub(b.start))
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K%s", line)
	} else {
		fmt.Fprintln(b.w, line)
	}
}

// done ends the progress with a summary line.
func (b *byteProgress) done(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tty {
		fmt.Fprint(b.w, "\r\033[K")
	}
	if err != nil {
		return
	}
	took := time.Since(b.start)
	fmt.Fprintf(b.w, "%s: %s in %s (%s)\n", b.what, humanBytes(b.n), took.Round(10*time.Millisecond), rate(b.n, took))
}

func rate(n int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return humanBytes(int64(float64(n)/d.Seconds())) + "/s"
}
