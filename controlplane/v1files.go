package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// portsTimeout bounds a ports listing.
const portsTimeout = 10 * time.Second

// fileQuery is envd's /files query for the request's path and user
// parameters.
func fileQuery(r *http.Request) (url.Values, error) {
	p := r.URL.Query().Get("path")
	if p == "" {
		return nil, fmt.Errorf("query parameter path is required: %w", errdefs.ErrInvalid)
	}
	q := url.Values{"path": {p}}
	if u := r.URL.Query().Get("user"); u != "" {
		q.Set("username", u)
	}
	return q, nil
}

// downloadFile is GET /v1/sandboxes/{id}/files?path=[&user=]: the file's
// bytes, streamed from envd (Range requests are passed on).
func (s *Server) downloadFile(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q, err := fileQuery(r)
	if err != nil {
		s.fail(w, r, "download file", err)
		return
	}
	_, t, err := s.runningSandbox(r, key)
	if err != nil {
		s.fail(w, r, "download file", err)
		return
	}
	req, err := t.request(r.Context(), http.MethodGet, "/files", q, nil)
	if err != nil {
		s.fail(w, r, "download file", err)
		return
	}
	if rg := r.Header.Get("Range"); rg != "" {
		req.Header.Set("Range", rg)
	}
	resp, err := s.agents.client.Do(req)
	if err != nil {
		s.fail(w, r, "download file", fmt.Errorf("read file of sandbox %s: %v: %w", t.sandboxID, err, errdefs.ErrUnreachable))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		s.envdRefused(w, r, "download file", t, resp)
		return
	}
	for _, h := range []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "Last-Modified"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(resp.StatusCode)
	if _, err := io.Copy(w, resp.Body); err != nil {
		s.log.Debug("file download cut short", "sandbox", t.sandboxID, "err", err)
	}
}

// fileEntry is envd's answer to a write.
type fileEntry struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// uploadFile is PUT /v1/sandboxes/{id}/files?path=[&user=]: the body,
// streamed to envd, becomes the file (parents are created, an existing
// file is replaced). The answer is the written entry.
func (s *Server) uploadFile(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q, err := fileQuery(r)
	if err != nil {
		s.fail(w, r, "upload file", err)
		return
	}
	_, t, err := s.runningSandbox(r, key)
	if err != nil {
		s.fail(w, r, "upload file", err)
		return
	}
	req, err := t.request(r.Context(), http.MethodPost, "/files", q, r.Body)
	if err != nil {
		s.fail(w, r, "upload file", err)
		return
	}
	req.ContentLength = r.ContentLength
	req.Header.Set("Content-Type", "application/octet-stream")
	if ce := r.Header.Get("Content-Encoding"); ce != "" {
		req.Header.Set("Content-Encoding", ce)
	}
	resp, err := s.agents.client.Do(req)
	if err != nil {
		s.fail(w, r, "upload file", fmt.Errorf("write file of sandbox %s: %v: %w", t.sandboxID, err, errdefs.ErrUnreachable))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.envdRefused(w, r, "upload file", t, resp)
		return
	}
	var entries []fileEntry
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBodyBytes)).Decode(&entries); err != nil || len(entries) == 0 {
		s.fail(w, r, "upload file", fmt.Errorf("decode write answer of sandbox %s: %v: %w", t.sandboxID, err, errdefs.ErrUnreachable))
		return
	}
	writeJSON(w, http.StatusOK, entries[0])
}

// portJSON is one listening TCP server of a sandbox, as envd reports it.
type portJSON struct {
	Port      uint16 `json:"port"`
	Address   string `json:"address"`
	Forwarded bool   `json:"forwarded"`
}

// sandboxPorts is GET /v1/sandboxes/{id}/ports: the TCP servers listening
// in the sandbox; forwarded ones (loopback servers envd forwards to) are
// reachable through the proxy.
func (s *Server) sandboxPorts(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	_, t, err := s.runningSandbox(r, key)
	if err != nil {
		s.fail(w, r, "list ports", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), portsTimeout)
	defer cancel()
	req, err := t.request(ctx, http.MethodGet, "/ports", nil, nil)
	if err != nil {
		s.fail(w, r, "list ports", err)
		return
	}
	resp, err := s.agents.client.Do(req)
	if err != nil {
		s.fail(w, r, "list ports", fmt.Errorf("list ports of sandbox %s: %v: %w", t.sandboxID, err, errdefs.ErrUnreachable))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.envdRefused(w, r, "list ports", t, resp)
		return
	}
	ports := []portJSON{}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBodyBytes)).Decode(&ports); err != nil {
		s.fail(w, r, "list ports", fmt.Errorf("decode ports of sandbox %s: %v: %w", t.sandboxID, err, errdefs.ErrUnreachable))
		return
	}
	if ports == nil {
		ports = []portJSON{}
	}
	writeJSON(w, http.StatusOK, ports)
}

// envdRefused answers a non-success envd (or agent) answer: the caller's
// mistakes (400, 404, 416, 507) keep their status and message; anything
// else, such as envd refusing the control plane's token, is a 502.
func (s *Server) envdRefused(w http.ResponseWriter, r *http.Request, op string, t envdTarget, resp *http.Response) {
	var body struct {
		Message string `json:"message"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body)
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestedRangeNotSatisfiable, http.StatusInsufficientStorage:
		if body.Message == "" {
			body.Message = http.StatusText(resp.StatusCode)
		}
		errdefs.WriteHTTP(w, resp.StatusCode, body.Message)
		return
	}
	s.fail(w, r, op, fmt.Errorf("envd of sandbox %s answered %s: %s: %w", t.sandboxID, resp.Status, body.Message, errdefs.ErrUnreachable))
}
