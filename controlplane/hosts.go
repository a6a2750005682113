package controlplane

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/store"
)

// registerRequest is POST /v1/hosts/register's body, sent by an agent
// that starts on another machine.
type registerRequest struct {
	RegistrationToken string `json:"registrationToken"`
	Name              string `json:"name"`
	// URL is where the control plane reaches the agent.
	URL string `json:"url"`
	// Token is what the control plane presents to the agent, and what the
	// agent presents in its heartbeats.
	Token        string `json:"token"`
	Runtime      string `json:"runtime"`
	CPUs         int    `json:"cpus"`
	MemoryMB     int64  `json:"memoryMB"`
	MaxSandboxes int    `json:"maxSandboxes"`
	// Capabilities are the runtime's (pause, snapshot, vm). Optional: a
	// host without them is asked to act and its refusal reported.
	Capabilities *runtime.Capabilities `json:"capabilities"`
}

// parseRegister validates a registration body (all but the token's
// validity). Errors wrap errdefs.ErrInvalid.
func parseRegister(req registerRequest) error {
	if req.RegistrationToken == "" || len(req.RegistrationToken) > maxKeyLen {
		return fmt.Errorf("registrationToken is required: %w", errdefs.ErrInvalid)
	}
	u, err := url.Parse(req.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q: want http(s)://host[:port]: %w", req.URL, errdefs.ErrInvalid)
	}
	if req.Token == "" || len(req.Token) > maxKeyLen {
		return fmt.Errorf("token is required, at most %d bytes: %w", maxKeyLen, errdefs.ErrInvalid)
	}
	if req.CPUs < 0 || req.MemoryMB < 0 || req.MaxSandboxes < 0 || len(req.Name) > 253 || len(req.Runtime) > 64 {
		return fmt.Errorf("negative capacity or overlong name: %w", errdefs.ErrInvalid)
	}
	return nil
}

// registerHost is POST /v1/hosts/register. The registration token is the
// credential: it works once. The agent is not called here (an
// unauthenticated caller must not make the control plane dial addresses);
// the reconciler checks it answers, and marks it down when it does not.
func (s *Server) registerHost(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	err := decodeJSON(r.Body, &req)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("empty body: %w", errdefs.ErrInvalid)
	}
	if err == nil {
		err = parseRegister(req)
	}
	if err != nil {
		s.fail(w, r, "register host", err)
		return
	}
	ctx := r.Context()
	err = s.store.ConsumeRegistrationToken(ctx, store.HashKey(req.RegistrationToken), time.Now().UTC())
	if errors.Is(err, errdefs.ErrNotFound) {
		s.fail(w, r, "register host", fmt.Errorf("invalid, expired or used registration token: %w", errdefs.ErrUnauthenticated))
		return
	}
	if err != nil {
		s.fail(w, r, "register host", err)
		return
	}
	h := store.Host{
		ID: "host" + randomString(8), Name: req.Name, URL: strings.TrimSuffix(req.URL, "/"), Token: req.Token,
		Runtime: req.Runtime, CPUs: req.CPUs, MemoryMB: req.MemoryMB, MaxSandboxes: req.MaxSandboxes,
		State: store.HostReady,
	}
	if req.Capabilities != nil {
		if h.Capabilities, err = json.Marshal(req.Capabilities); err != nil {
			s.fail(w, r, "register host", err)
			return
		}
	}
	if err := s.store.UpsertHost(ctx, h); err != nil {
		s.fail(w, r, "register host", err)
		return
	}
	s.log.Info("host registered", "host", h.ID, "name", h.Name, "url", h.URL, "runtime", h.Runtime,
		"capabilities", req.Capabilities, "max_sandboxes", h.MaxSandboxes)
	writeJSON(w, http.StatusCreated, map[string]string{"hostID": h.ID})
}

// heartbeatRequest is POST /v1/hosts/{id}/heartbeat's body.
type heartbeatRequest struct {
	Sandboxes int   `json:"sandboxes"`
	VCPUs     int   `json:"vcpus"`
	MemoryMB  int64 `json:"memoryMB"`
}

// hostHeartbeat is POST /v1/hosts/{id}/heartbeat, authenticated by the
// host's own token as a Bearer token. An unknown host and a wrong token
// are both 401.
func (s *Server) hostHeartbeat(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	h, err := s.store.GetHost(ctx, id)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		s.fail(w, r, "heartbeat", err)
		return
	}
	if err != nil || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(h.Token)) != 1 {
		s.fail(w, r, "host heartbeat", fmt.Errorf("unknown host or invalid host token: %w", errdefs.ErrUnauthenticated))
		return
	}
	var req heartbeatRequest
	if err := decodeJSON(r.Body, &req); err != nil && !errors.Is(err, io.EOF) {
		s.fail(w, r, "heartbeat", err)
		return
	}
	if req.Sandboxes < 0 || req.VCPUs < 0 || req.MemoryMB < 0 {
		s.fail(w, r, "heartbeat", fmt.Errorf("negative usage: %w", errdefs.ErrInvalid))
		return
	}
	usage := store.HostUsage{Sandboxes: req.Sandboxes, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB}
	if err := s.store.Heartbeat(ctx, id, time.Now().UTC(), usage); err != nil {
		s.fail(w, r, "heartbeat", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CreateRegistrationToken returns a one-time token an agent presents to
// POST /v1/hosts/register within ttl. It is stored hashed: show it once.
func (s *Server) CreateRegistrationToken(ctx context.Context, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("registration token ttl %s: must be positive: %w", ttl, errdefs.ErrInvalid)
	}
	tok := "roostreg_" + newToken()
	if err := s.store.CreateRegistrationToken(ctx, store.HashKey(tok), time.Now().UTC().Add(ttl)); err != nil {
		return "", fmt.Errorf("create registration token: %w", err)
	}
	return tok, nil
}
