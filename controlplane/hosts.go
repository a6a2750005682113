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
	// URL is where the control plane reaches the agent: https, since the
	// link is mutual TLS.
	URL string `json:"url"`
	// CSR is the agent's PEM certificate request: its key never leaves it.
	CSR string `json:"csr"`
	// HostID and Token, when set, are the agent's current registration:
	// it registers again (a new certificate, URL or an old registration
	// from before the link was TLS) and keeps its host ID and sandboxes.
	HostID       string `json:"hostID,omitempty"`
	Token        string `json:"token,omitempty"`
	Runtime      string `json:"runtime"`
	CPUs         int    `json:"cpus"`
	MemoryMB     int64  `json:"memoryMB"`
	MaxSandboxes int    `json:"maxSandboxes"`
	// Capabilities are the runtime's (pause, snapshot, vm). Optional: a
	// host without them is asked to act and its refusal reported.
	Capabilities *runtime.Capabilities `json:"capabilities"`
	// VolumeDirID is the ID of the agent's volume directory, the same
	// on every host sharing it. Optional: "" keeps its volumes its own.
	VolumeDirID string `json:"volumeDirID"`
}

// registerResponse is what a registered agent gets: its host ID, the
// token it heartbeats with (shown once: the store keeps its hash), its
// certificate and the cluster CA's, in PEM.
type registerResponse struct {
	HostID      string `json:"hostID"`
	Token       string `json:"token"`
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// maxCSRLen bounds the certificate request (a P-256 one is ~400 bytes).
const maxCSRLen = 16 << 10

// parseRegister validates a registration body (all but the token's
// validity) and returns the host part of its URL. Errors wrap
// errdefs.ErrInvalid.
func parseRegister(req registerRequest) (string, error) {
	if req.RegistrationToken == "" || len(req.RegistrationToken) > maxKeyLen {
		return "", fmt.Errorf("registrationToken is required: %w", errdefs.ErrInvalid)
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Host == "" || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("url %q: want https://host[:port]: %w", req.URL, errdefs.ErrInvalid)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("url %q: agents are called over mutual TLS, want https:// (upgrade the agent): %w", req.URL, errdefs.ErrInvalid)
	}
	if req.CSR == "" || len(req.CSR) > maxCSRLen {
		return "", fmt.Errorf("csr is required (a PEM certificate request of at most %d bytes; an agent that sends none predates mutual TLS: upgrade it): %w",
			maxCSRLen, errdefs.ErrInvalid)
	}
	if (req.HostID == "") != (req.Token == "") || len(req.HostID) > 64 || len(req.Token) > maxKeyLen {
		return "", fmt.Errorf("hostID and token go together: %w", errdefs.ErrInvalid)
	}
	if req.CPUs < 0 || req.MemoryMB < 0 || req.MaxSandboxes < 0 || len(req.Name) > 253 || len(req.Runtime) > 64 || len(req.VolumeDirID) > 64 {
		return "", fmt.Errorf("negative capacity or overlong name: %w", errdefs.ErrInvalid)
	}
	return u.Hostname(), nil
}

// registerHost is POST /v1/hosts/register. The registration token is the
// credential: it works once. The control plane signs the agent's
// certificate request for the host ID and the URL's host, and makes the
// agent's heartbeat token. The agent is not called here (an
// unauthenticated caller must not make the control plane dial addresses);
// the reconciler checks it answers, and marks it down when it does not.
func (s *Server) registerHost(w http.ResponseWriter, r *http.Request) {
	var req registerRequest
	err := decodeJSON(r.Body, &req)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("empty body: %w", errdefs.ErrInvalid)
	}
	var addrHost string
	if err == nil {
		addrHost, err = parseRegister(req)
	}
	if err != nil {
		s.fail(w, r, "register host", err)
		return
	}
	ctx := r.Context()
	// A previous registration is checked before the one-time token is
	// spent, so a mistake does not cost the operator a token.
	id := "host" + randomString(8)
	var prev store.Host
	if req.HostID != "" {
		if prev, err = s.authHost(ctx, req.HostID, req.Token); err != nil {
			s.fail(w, r, "register host", err)
			return
		}
		id = prev.ID
	}
	err = s.store.ConsumeRegistrationToken(ctx, store.HashKey(req.RegistrationToken), s.store.Now())
	if errors.Is(err, errdefs.ErrNotFound) {
		s.fail(w, r, "register host", fmt.Errorf("invalid, expired or used registration token: %w", errdefs.ErrUnauthenticated))
		return
	}
	if err != nil {
		s.fail(w, r, "register host", err)
		return
	}
	cert, err := s.ca.SignAgent([]byte(req.CSR), id, addrHost, time.Now())
	if err != nil {
		s.fail(w, r, "register host", err)
		return
	}
	token := "roostagent_" + newToken()
	h := store.Host{
		ID: id, Name: req.Name, URL: strings.TrimSuffix(req.URL, "/"), TokenHash: store.HashKey(token),
		Runtime: req.Runtime, CPUs: req.CPUs, MemoryMB: req.MemoryMB, MaxSandboxes: req.MaxSandboxes,
		State: store.HostReady, RegisteredAt: prev.RegisteredAt, VolumeDirID: req.VolumeDirID,
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
	s.hostsChanged(ctx)
	s.log.Info("host registered", "host", h.ID, "again", prev.ID != "", "name", h.Name, "url", h.URL, "runtime", h.Runtime,
		"capabilities", req.Capabilities, "max_sandboxes", h.MaxSandboxes)
	writeJSON(w, http.StatusCreated, registerResponse{HostID: h.ID, Token: token, Certificate: string(cert), CA: string(s.ca.CertPEM())})
}

// authHost returns host id when token is its heartbeat token. An unknown
// host and a wrong token are both errdefs.ErrUnauthenticated.
func (s *Server) authHost(ctx context.Context, id, token string) (store.Host, error) {
	h, err := s.store.GetHost(ctx, id)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return store.Host{}, err
	}
	if err != nil || token == "" || len(h.TokenHash) == 0 || subtle.ConstantTimeCompare(store.HashKey(token), h.TokenHash) != 1 {
		return store.Host{}, fmt.Errorf("unknown host or invalid host token: %w", errdefs.ErrUnauthenticated)
	}
	return h, nil
}

// heartbeatRequest is POST /v1/hosts/{id}/heartbeat's body.
type heartbeatRequest struct {
	Sandboxes int   `json:"sandboxes"`
	VCPUs     int   `json:"vcpus"`
	MemoryMB  int64 `json:"memoryMB"`
	// VolumeDirID, when set, is the agent's volume directory's ID (one
	// registered before the control plane kept it reports it here).
	VolumeDirID string `json:"volumeDirID"`
}

// hostHeartbeat is POST /v1/hosts/{id}/heartbeat, authenticated by the
// host's own token as a Bearer token. An unknown host and a wrong token
// are both 401.
func (s *Server) hostHeartbeat(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	got, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	h, err := s.authHost(ctx, id, got)
	if err != nil {
		s.fail(w, r, "host heartbeat", err)
		return
	}
	var req heartbeatRequest
	if err := decodeJSON(r.Body, &req); err != nil && !errors.Is(err, io.EOF) {
		s.fail(w, r, "heartbeat", err)
		return
	}
	if req.Sandboxes < 0 || req.VCPUs < 0 || req.MemoryMB < 0 || len(req.VolumeDirID) > 64 {
		s.fail(w, r, "heartbeat", fmt.Errorf("negative usage or overlong volumeDirID: %w", errdefs.ErrInvalid))
		return
	}
	if req.VolumeDirID != "" && req.VolumeDirID != h.VolumeDirID {
		if err := s.store.SetHostVolumeDir(ctx, id, req.VolumeDirID); err != nil {
			s.fail(w, r, "heartbeat", err)
			return
		}
	}
	usage := store.HostUsage{Sandboxes: req.Sandboxes, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB}
	if err := s.store.Heartbeat(ctx, id, s.store.Now(), usage); err != nil {
		s.fail(w, r, "heartbeat", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// CreateRegistrationToken returns a one-time token an agent presents to
// POST /v1/hosts/register within ttl: "roostreg_SECRET.sha256:HEX", the
// secret and the cluster CA's fingerprint. It is stored hashed: show it
// once.
func (s *Server) CreateRegistrationToken(ctx context.Context, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("registration token ttl %s: must be positive: %w", ttl, errdefs.ErrInvalid)
	}
	// The token pins the cluster CA (as kubeadm's discovery hash does): the
	// agent accepts the CA the registration answer carries only when it is
	// this one, so a man in the middle cannot slip in its own.
	tok := "roostreg_" + newToken() + "." + s.ca.Fingerprint()
	if err := s.store.CreateRegistrationToken(ctx, store.HashKey(tok), s.store.Now().Add(ttl)); err != nil {
		return "", fmt.Errorf("create registration token: %w", err)
	}
	return tok, nil
}
