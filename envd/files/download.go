package files

import (
	"compress/gzip"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// download serves GET and HEAD. A returned error means nothing has been
// written yet; failures after the response started are logged here.
func (h *Handler) download(w http.ResponseWriter, r *http.Request) error {
	u, err := h.user(r)
	if err != nil {
		return err
	}
	raw := r.URL.Query().Get("path")
	if raw == "" {
		return badRequest("missing path query parameter")
	}
	path, err := u.Resolve(raw)
	if err != nil {
		return err
	}
	// Stat before opening: opening a FIFO for reading would block until a
	// writer appears. O_NONBLOCK covers a swap between the two calls.
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if err := servable(path, fi); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return err
	}
	if err := servable(path, fi); err != nil {
		return err
	}

	name := filepath.Base(path)
	hdr := w.Header()
	hdr.Set("Vary", "Accept-Encoding")
	if cd := mime.FormatMediaType("attachment", map[string]string{"filename": name}); cd != "" {
		hdr.Set("Content-Disposition", cd)
	}
	if wantsGzip(r) && compressible(f) {
		h.serveGzip(w, r, f, fi, name)
		return nil
	}
	// http.ServeContent does ranges, conditional requests, HEAD, type
	// sniffing and sendfile; only its text error bodies need translating.
	cw := &errorCapture{ResponseWriter: w}
	http.ServeContent(cw, r, name, fi.ModTime(), f)
	if cw.status != 0 {
		hdr.Del("Content-Disposition")
		msg := strings.TrimSpace(string(cw.body))
		if msg == "" {
			msg = strings.ToLower(http.StatusText(cw.status))
		}
		return &requestError{cw.status, msg}
	}
	return nil
}

func servable(path string, fi os.FileInfo) error {
	switch {
	case fi.IsDir():
		return badRequest("%s is a directory; /files downloads single files (list directories with Filesystem.ListDir)", path)
	case !fi.Mode().IsRegular():
		return badRequest("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	return nil
}

// serveGzip streams f compressed. The length is unknown up front, so the
// body is chunked; an error mid-stream can only truncate it, which the
// client detects through the gzip trailer.
func (h *Handler) serveGzip(w http.ResponseWriter, r *http.Request, f *os.File, fi os.FileInfo, name string) {
	hdr := w.Header()
	hdr.Set("Content-Type", contentType(name, f))
	hdr.Set("Content-Encoding", "gzip")
	if t := fi.ModTime(); !t.IsZero() && t.Unix() != 0 {
		hdr.Set("Last-Modified", t.UTC().Format(http.TimeFormat))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	gw := gzipWriters.Get().(*gzip.Writer)
	gw.Reset(w)
	defer gzipWriters.Put(gw)
	buf := getBuf()
	defer putBuf(buf)
	_, rerr, werr := copyFull(gw, f, *buf)
	if rerr == nil && werr == nil {
		werr = gw.Close()
	}
	if err := errors.Join(rerr, werr); err != nil {
		h.log.Debug("gzip download interrupted", "path", f.Name(), "err", err)
	}
}

var gzipWriters = sync.Pool{New: func() any {
	// BestSpeed: compression must not make the download CPU-bound far
	// below what the network can carry.
	gw, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
	return gw
}}

// sampleSize is how much of a file compressible tries to compress.
const sampleSize = 64 << 10

// compressible reports whether gzip would shrink f, judged by compressing
// its first bytes: archives, images and random data come out no smaller,
// and compressing them would only cap the download at the compressor's
// speed (a few hundred MB/s) for nothing.
func compressible(f *os.File) bool {
	buf := getBuf()
	defer putBuf(buf)
	n, _ := f.ReadAt((*buf)[:sampleSize], 0)
	if n < 512 {
		return true // too little to judge, and too little to matter
	}
	var out countingWriter
	gw := gzipWriters.Get().(*gzip.Writer)
	gw.Reset(&out)
	_, _ = gw.Write((*buf)[:n])
	_ = gw.Close()
	gzipWriters.Put(gw)
	return out.n < int64(n)*9/10
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// contentType is the type by extension, else sniffed from the first bytes.
func contentType(name string, f *os.File) string {
	if ct := mime.TypeByExtension(filepath.Ext(name)); ct != "" {
		return ct
	}
	var head [512]byte
	n, _ := f.ReadAt(head[:], 0)
	return http.DetectContentType(head[:n])
}

// wantsGzip reports whether the response should be gzip-compressed. Range
// and conditional requests are served uncompressed, by http.ServeContent:
// Accept-Encoding is advisory, and 206/304 semantics matter more.
func wantsGzip(r *http.Request) bool {
	for _, h := range []string{"Range", "If-Range", "If-Modified-Since", "If-None-Match", "If-Unmodified-Since", "If-Match"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	return acceptsGzip(r.Header.Values("Accept-Encoding"))
}

// acceptsGzip reports whether an Accept-Encoding header asks for gzip: gzip
// (or x-gzip) listed with a non-zero quality, or "*" when identity is
// explicitly refused.
func acceptsGzip(values []string) bool {
	gzipQ, starQ, identityQ := -1.0, -1.0, -1.0
	for _, v := range values {
		for elem := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(elem, ";")
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						q = f
					}
				}
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "gzip", "x-gzip":
				gzipQ = max(gzipQ, q)
			case "*":
				starQ = max(starQ, q)
			case "identity":
				identityQ = max(identityQ, q)
			}
		}
	}
	if gzipQ >= 0 {
		return gzipQ > 0
	}
	return starQ > 0 && identityQ == 0
}

// errorCapture keeps http.ServeContent's plain-text error responses (416,
// 412) from reaching the client so they can be rewritten as JSON. Success
// responses pass straight through, including ReadFrom, which keeps
// sendfile in play.
type errorCapture struct {
	http.ResponseWriter
	status int
	body   []byte
}

func (c *errorCapture) WriteHeader(code int) {
	if code >= 400 {
		c.status = code
		return
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *errorCapture) Write(p []byte) (int, error) {
	if c.status != 0 {
		if len(c.body) < 1024 {
			c.body = append(c.body, p...)
		}
		return len(p), nil
	}
	return c.ResponseWriter.Write(p)
}

func (c *errorCapture) ReadFrom(src io.Reader) (int64, error) {
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok && c.status == 0 {
		return rf.ReadFrom(src)
	}
	return io.Copy(struct{ io.Writer }{c}, src)
}

func (c *errorCapture) Unwrap() http.ResponseWriter { return c.ResponseWriter }
