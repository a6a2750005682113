package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
)

// HTTPSource reads blobs over HTTP from BaseURL + "/" + digest (such as
// "https://cp/v1/hosts/h1/blobs/sha256:…"), resuming with a Range
// request. A server that ignores Range (200 with the whole blob) is read
// past the offset, so a resumed download stays correct.
type HTTPSource struct {
	BaseURL string
	// Client makes the requests; nil is http.DefaultClient. Its Timeout,
	// if any, bounds a whole blob's transfer.
	Client *http.Client
	// Header is added to every request (authorization).
	Header http.Header
}

// Open implements Source. A 404 wraps errdefs.ErrNotFound, 401
// errdefs.ErrUnauthenticated, 403 errdefs.ErrPermissionDenied, other
// failures errdefs.ErrUnavailable.
func (s *HTTPSource) Open(ctx context.Context, d Digest, offset int64) (io.ReadCloser, error) {
	url := strings.TrimSuffix(s.BaseURL, "/") + "/" + string(d)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("blob url %q: %w: %w", url, err, errdefs.ErrInvalid)
	}
	for k, vs := range s.Header {
		req.Header[k] = append(req.Header[k], vs...)
	}
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("get blob: %w", context.Cause(ctx))
		}
		return nil, fmt.Errorf("get blob: %w: %w", err, errdefs.ErrUnreachable)
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		if start, ok := rangeStart(resp.Header.Get("Content-Range")); !ok || start != offset {
			resp.Body.Close()
			return nil, fmt.Errorf("get blob: asked bytes from %d, got Content-Range %q: %w", offset, resp.Header.Get("Content-Range"), errdefs.ErrUnavailable)
		}
		return resp.Body, nil
	case resp.StatusCode == http.StatusOK:
		if offset > 0 {
			if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
				resp.Body.Close()
				return nil, fmt.Errorf("get blob: skip to %d: %w", offset, err)
			}
		}
		return resp.Body, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	err = fmt.Errorf("get blob %s: %s: %s", d.Short(), resp.Status, strings.TrimSpace(string(msg)))
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
	case http.StatusForbidden:
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	}
	return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
}

// rangeStart reads the first byte position of a Content-Range header
// ("bytes 100-199/200").
func rangeStart(h string) (int64, bool) {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(first, 10, 64)
	return n, err == nil
}

// ServeBlob answers a GET or HEAD of blob d with http.ServeContent (Range,
// Content-Length, ETag the digest); 404 when b lacks it.
func ServeBlob(w http.ResponseWriter, r *http.Request, b *Blobs, d Digest) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	f, err := b.Open(d)
	switch {
	case errors.Is(err, errdefs.ErrInvalid):
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case errors.Is(err, errdefs.ErrNotFound):
		http.Error(w, "blob "+string(d)+" not found", http.StatusNotFound)
		return
	case err != nil:
		http.Error(w, "open blob", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+string(d)+`"`)
	w.Header().Set("Cache-Control", "immutable")
	http.ServeContent(w, r, "", time.Time{}, f)
}

// ReceiveBlob stores the body of a PUT as blob d, verified, of at most
// maxBytes: 201 when stored, 200 when b already had it, 400 when the body
// has another digest, 413 when too large.
func ReceiveBlob(w http.ResponseWriter, r *http.Request, b *Blobs, d Digest, maxBytes int64) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if _, err := ParseDigest(string(d)); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if b.Has(d) {
		w.WriteHeader(http.StatusOK)
		return
	}
	body := http.MaxBytesReader(w, r.Body, maxBytes)
	_, err := b.Put(r.Context(), body, d)
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		http.Error(w, fmt.Sprintf("blob larger than %d bytes", maxBytes), http.StatusRequestEntityTooLarge)
	case errors.Is(err, errdefs.ErrInvalid):
		http.Error(w, err.Error(), http.StatusBadRequest)
	case err != nil:
		http.Error(w, "store blob", http.StatusInternalServerError)
	default:
		w.WriteHeader(http.StatusCreated)
	}
}
