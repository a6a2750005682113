package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"roost.dev/roost/atomicfile"
	"roost.dev/roost/errdefs"
)

// RegistrationFile is where, in the data directory, an agent keeps what it
// registered as: the control plane's URL, its host ID, its advertised URL
// and its token (mode 0600, the token is a credential).
const RegistrationFile = "registration.json"

// Registration is an accepted registration with a control plane.
type Registration struct {
	Server string `json:"server"`
	HostID string `json:"hostID"`
	URL    string `json:"url"`
	Token  string `json:"token"`
}

// ReadRegistration reads the registration stored at path. A missing file
// is errdefs.ErrNotFound.
func ReadRegistration(path string) (Registration, error) {
	var reg Registration
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return reg, fmt.Errorf("read registration %s: %w", path, errdefs.ErrNotFound)
	}
	if err != nil {
		return reg, fmt.Errorf("read registration: %w", err)
	}
	if err := json.Unmarshal(b, &reg); err != nil {
		return reg, fmt.Errorf("read registration %s: %w", path, err)
	}
	return reg, nil
}

func writeRegistration(path string, reg Registration) error {
	b, err := json.MarshalIndent(reg, "", "  ")
	if err != nil {
		return fmt.Errorf("encode registration: %w", err)
	}
	// Synced, file and directory: the control plane accepted the
	// registration token once, and an agent that loses this file after a
	// crash cannot register again without a new one.
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write registration: %w", err)
	}
	return nil
}

// RegistrarConfig configures a Registrar.
type RegistrarConfig struct {
	// ServerURL is the control plane, e.g. "http://10.0.0.1:3000".
	ServerURL string
	// RegistrationToken is the control plane's one-time token. It is only
	// needed when no matching registration is stored in StateFile.
	RegistrationToken string
	// AdvertiseURL is where the control plane reaches this agent.
	AdvertiseURL string
	// Token is the agent's own token: the control plane presents it on
	// every call, and the agent presents it in its heartbeats.
	Token string
	// Name is the host's display name. Default: the hostname.
	Name string
	// StateFile keeps the accepted registration across restarts.
	StateFile string
	// Interval between heartbeats. Default 5 s.
	Interval time.Duration
	// Client makes the calls. Default: a client with a 10 s timeout.
	Client *http.Client
}

// host is what the Registrar reports; *Manager implements it.
type host interface {
	HostInfo(ctx context.Context) HostInfo
	List(states ...State) []Sandbox
}

// Registrar registers the agent with a control plane once, and then
// heartbeats. Registration tokens work once, so the accepted registration
// (host ID and token) is stored in StateFile; an agent restarted with the
// same server, advertised URL and token only heartbeats. Changing any of
// them needs a fresh registration token and registers a new host.
type Registrar struct {
	cfg  RegistrarConfig
	host host
	log  *slog.Logger
}

// NewRegistrar returns a Registrar reporting m.
func NewRegistrar(cfg RegistrarConfig, m *Manager, log *slog.Logger) (*Registrar, error) {
	return newRegistrar(cfg, m, log)
}

func newRegistrar(cfg RegistrarConfig, h host, log *slog.Logger) (*Registrar, error) {
	cfg.ServerURL = strings.TrimSuffix(cfg.ServerURL, "/")
	cfg.AdvertiseURL = strings.TrimSuffix(cfg.AdvertiseURL, "/")
	switch {
	case !strings.HasPrefix(cfg.ServerURL, "http://") && !strings.HasPrefix(cfg.ServerURL, "https://"):
		return nil, fmt.Errorf("server url %q: want http(s)://host[:port]: %w", cfg.ServerURL, errdefs.ErrInvalid)
	case !strings.HasPrefix(cfg.AdvertiseURL, "http://") && !strings.HasPrefix(cfg.AdvertiseURL, "https://"):
		return nil, fmt.Errorf("advertise url %q: want http(s)://host[:port]: %w", cfg.AdvertiseURL, errdefs.ErrInvalid)
	case cfg.Token == "":
		return nil, fmt.Errorf("registration needs the agent token: %w", errdefs.ErrInvalid)
	case cfg.StateFile == "":
		return nil, fmt.Errorf("registration needs a state file: %w", errdefs.ErrInvalid)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Name == "" {
		cfg.Name, _ = os.Hostname()
	}
	return &Registrar{cfg: cfg, host: h, log: log}, nil
}

// Run registers (or reuses the stored registration) and heartbeats until
// ctx ends, which returns nil. A control plane that cannot be reached is
// retried; one that refuses the registration token ends Run with an error
// wrapping errdefs.ErrInvalid. Failed heartbeats are logged and retried.
func (r *Registrar) Run(ctx context.Context) error {
	reg, err := r.registration(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	failing := false
	for {
		err := r.heartbeat(ctx, reg)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !failing:
			r.log.Warn("heartbeat failed", "server", r.cfg.ServerURL, "host", reg.HostID, "err", err)
		case err == nil && failing:
			r.log.Info("heartbeat recovered", "server", r.cfg.ServerURL, "host", reg.HostID)
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// registration returns the stored registration when it matches the
// configuration, else registers, retrying while the control plane is
// unreachable.
func (r *Registrar) registration(ctx context.Context) (Registration, error) {
	stored, err := ReadRegistration(r.cfg.StateFile)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return Registration{}, err
	}
	if err == nil && stored.Server == r.cfg.ServerURL && stored.URL == r.cfg.AdvertiseURL && stored.Token == r.cfg.Token {
		r.log.Info("registration reused", "server", stored.Server, "host", stored.HostID)
		return stored, nil
	}
	if r.cfg.RegistrationToken == "" {
		return Registration{}, fmt.Errorf("not registered with %s under this url and token: a registration token is needed: %w",
			r.cfg.ServerURL, errdefs.ErrInvalid)
	}
	backoff := 250 * time.Millisecond
	for {
		id, err := r.register(ctx)
		if err == nil {
			reg := Registration{Server: r.cfg.ServerURL, HostID: id, URL: r.cfg.AdvertiseURL, Token: r.cfg.Token}
			if err := writeRegistration(r.cfg.StateFile, reg); err != nil {
				return Registration{}, err
			}
			r.log.Info("host registered", "server", reg.Server, "host", id, "url", reg.URL)
			return reg, nil
		}
		if errors.Is(err, errdefs.ErrInvalid) {
			return Registration{}, err
		}
		r.log.Warn("registration failed; retrying", "server", r.cfg.ServerURL, "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return Registration{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// register calls POST /v1/hosts/register and returns the host ID. A 4xx
// answer wraps errdefs.ErrInvalid: retrying cannot help.
func (r *Registrar) register(ctx context.Context) (string, error) {
	info := r.host.HostInfo(ctx)
	body := map[string]any{
		"registrationToken": r.cfg.RegistrationToken, "name": r.cfg.Name, "url": r.cfg.AdvertiseURL,
		"token": r.cfg.Token, "runtime": info.Runtime, "cpus": info.CPUs, "memoryMB": info.MemoryMB,
		"maxSandboxes": info.MaxSandboxes, "capabilities": info.Capabilities,
	}
	var out struct {
		HostID string `json:"hostID"`
	}
	if err := r.post(ctx, "/v1/hosts/register", "", body, http.StatusCreated, &out); err != nil {
		return "", fmt.Errorf("register: %w", err)
	}
	if out.HostID == "" {
		return "", errors.New("register: no hostID in the answer")
	}
	return out.HostID, nil
}

// heartbeat calls POST /v1/hosts/{id}/heartbeat with the host's usage.
func (r *Registrar) heartbeat(ctx context.Context, reg Registration) error {
	var n, vcpus int
	var mem int64
	for _, sb := range r.host.List() {
		n++
		vcpus += sb.Limits.VCPUs
		mem += int64(sb.Limits.MemoryMB)
	}
	body := map[string]any{"sandboxes": n, "vcpus": vcpus, "memoryMB": mem}
	if err := r.post(ctx, "/v1/hosts/"+reg.HostID+"/heartbeat", reg.Token, body, http.StatusNoContent, nil); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

func (r *Registrar) post(ctx context.Context, path, bearer string, body any, want int, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.cfg.ServerURL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != want {
		err := fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			err = fmt.Errorf("%w: %w", err, errdefs.ErrInvalid)
		}
		return err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
	}
	return nil
}

// RegistrationPath is the registration file of the data directory.
func RegistrationPath(dataDir string) string { return filepath.Join(dataDir, RegistrationFile) }
