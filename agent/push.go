package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// BlobPush is where the blobs an agent's builds make go: the control
// plane's blob route of this host, PUT {URL}/{digest}.
type BlobPush struct {
	// URL is the route without the digest, such as
	// "https://cp/v1/hosts/h1/blobs". Empty: nothing is pushed.
	URL string
	// Header is added to every request (the heartbeat token).
	Header http.Header
	// Client makes the requests; nil is http.DefaultClient.
	Client *http.Client
}

// push puts the manifest d and every layer of m that the control plane
// lacks (a HEAD answers 404) into it; the manifest goes last, so a
// manifest the control plane has always has its layers.
func (p BlobPush) push(ctx context.Context, blobs *content.Blobs, m content.Manifest, d content.Digest) error {
	if p.URL == "" {
		return nil
	}
	for _, l := range m.Layers {
		if err := p.pushOne(ctx, blobs, l.Digest); err != nil {
			return err
		}
	}
	return p.pushOne(ctx, blobs, d)
}

func (p BlobPush) pushOne(ctx context.Context, blobs *content.Blobs, d content.Digest) error {
	url := strings.TrimSuffix(p.URL, "/") + "/" + string(d)
	has, err := p.has(ctx, url)
	if err != nil || has {
		return err
	}
	f, err := blobs.Open(d)
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d.Short(), err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d.Short(), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, f)
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d.Short(), err)
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := p.do(req)
	if err != nil {
		return fmt.Errorf("push blob %s: %w", d.Short(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("push blob %s: %w", d.Short(), statusError(resp))
	}
	return nil
}

// has asks with HEAD whether the control plane has the blob at url.
func (p BlobPush) has(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return false, fmt.Errorf("push blob: %w", err)
	}
	resp, err := p.do(req)
	if err != nil {
		return false, fmt.Errorf("push blob: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("push blob: HEAD %s: %w", url, statusError(resp))
}

func (p BlobPush) do(req *http.Request) (*http.Response, error) {
	for k, vs := range p.Header {
		req.Header[k] = append(req.Header[k], vs...)
	}
	c := p.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrUnreachable)
	}
	return resp, nil
}

// statusError describes a refusal, in the category of its status.
func statusError(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	err := fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(msg)))
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: %w", err, errdefs.ErrUnauthenticated)
	case http.StatusForbidden:
		return fmt.Errorf("%w: %w", err, errdefs.ErrPermissionDenied)
	case http.StatusBadRequest:
		return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
	case http.StatusRequestEntityTooLarge:
		return fmt.Errorf("%w: %w", err, errdefs.ErrExhausted)
	}
	return fmt.Errorf("%w: %w", err, errdefs.ErrUnavailable)
}

// blobRemote is where blobs come from and go to: the control plane.
type blobRemote struct {
	source content.Source
	push   BlobPush
}

// UseControlPlane points the host's blob transfers at the control plane
// reg registered with: pulls read its GET /v1/hosts/{id}/blobs, builds
// write its PUT, both with the heartbeat token. client makes the
// requests (nil: http.DefaultClient); a timeout on it would bound a whole
// blob's transfer. Safe to call while the manager runs.
func (m *Manager) UseControlPlane(reg Registration, client *http.Client) {
	url := strings.TrimSuffix(reg.Server, "/") + "/v1/hosts/" + reg.HostID + "/blobs"
	header := http.Header{"Authorization": {"Bearer " + reg.Token}}
	m.remote.Store(&blobRemote{
		source: &content.HTTPSource{BaseURL: url, Client: client, Header: header},
		push:   BlobPush{URL: url, Header: header, Client: client},
	})
}

// blobSource is where missing blobs are fetched from; nil: nowhere.
func (m *Manager) blobSource() content.Source {
	if r := m.remote.Load(); r != nil {
		return r.source
	}
	return m.cfg.BlobSource
}

// blobPush is where a build's blobs go.
func (m *Manager) blobPush() BlobPush {
	if r := m.remote.Load(); r != nil {
		return r.push
	}
	return m.cfg.BlobPush
}
