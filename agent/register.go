package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"roost.dev/roost/atomicfile"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/tlscert"
)

// RegistrationFile is where, in the data directory, an agent keeps what it
// registered as: the control plane's URL, its host ID, its advertised URL,
// its heartbeat token, and its TLS key, certificate and the cluster CA
// (mode 0600: the token and the key are credentials).
const RegistrationFile = "registration.json"

// Registration is an accepted registration with a control plane.
type Registration struct {
	Server string `json:"server"`
	HostID string `json:"hostID"`
	URL    string `json:"url"`
	// Token is presented in heartbeats; the control plane keeps its hash.
	Token string `json:"token"`
	// Certificate (the agent's, from the cluster CA), Key (made here, never
	// sent) and CA, all PEM: the agent serves TLS with them and admits
	// only the control plane's client certificate. A registration without
	// them predates mutual TLS and must be renewed.
	Certificate string `json:"certificate,omitempty"`
	Key         string `json:"key,omitempty"`
	CA          string `json:"ca,omitempty"`
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

// TLS is the agent's TLS server configuration from the registration:
// its certificate, and client certificates of the cluster CA naming the
// control plane required.
func (reg Registration) TLS(now time.Time) (*tls.Config, error) {
	if reg.Certificate == "" || reg.Key == "" || reg.CA == "" {
		return nil, fmt.Errorf("registration of host %s has no TLS certificate: %w", reg.HostID, errdefs.ErrInvalid)
	}
	return tlscert.AgentServerTLS([]byte(reg.Certificate), []byte(reg.Key), []byte(reg.CA), now)
}

// RegistrarConfig configures a Registrar.
type RegistrarConfig struct {
	// ServerURL is the control plane, e.g. "https://10.0.0.1:3000", or
	// its replicas' URLs separated by commas. Calls go to the replica
	// that last answered, and on to the next when one cannot be reached
	// or fails (5xx); a refusal (4xx) is final.
	ServerURL string
	// RegistrationToken is the control plane's one-time token
	// ("roostreg_SECRET.sha256:HEX", from roost server token), which pins
	// the cluster CA. It is only needed when no matching registration is
	// stored in StateFile.
	RegistrationToken string
	// AdvertiseURL is where the control plane reaches this agent: https.
	AdvertiseURL string
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
// (host ID, token, certificate) is stored in StateFile; an agent restarted
// with the same server and advertised URL only heartbeats. Changing
// either needs a fresh registration token and registers again, keeping
// the host ID.
type Registrar struct {
	cfg  RegistrarConfig
	host host
	log  *slog.Logger
	// volumeDirID is the host's volume directory ID, read once by Run.
	volumeDirID string
	// servers are ServerURL's replicas; current indexes the one that
	// last answered.
	servers []string
	current atomic.Int64
}

// NewRegistrar returns a Registrar reporting m.
func NewRegistrar(cfg RegistrarConfig, m *Manager, log *slog.Logger) (*Registrar, error) {
	return newRegistrar(cfg, m, log)
}

func newRegistrar(cfg RegistrarConfig, h host, log *slog.Logger) (*Registrar, error) {
	servers, err := serverURLs(cfg.ServerURL)
	if err != nil {
		return nil, err
	}
	cfg.ServerURL = strings.Join(servers, ",")
	cfg.AdvertiseURL = strings.TrimSuffix(cfg.AdvertiseURL, "/")
	switch {
	case !strings.HasPrefix(cfg.AdvertiseURL, "https://"):
		return nil, fmt.Errorf("advertise url %q: want https://host[:port] (the control plane calls agents over mutual TLS): %w",
			cfg.AdvertiseURL, errdefs.ErrInvalid)
	case cfg.StateFile == "":
		return nil, fmt.Errorf("registration needs a state file: %w", errdefs.ErrInvalid)
	}
	if cfg.RegistrationToken != "" {
		if _, err := tokenPin(cfg.RegistrationToken); err != nil {
			return nil, err
		}
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
	return &Registrar{cfg: cfg, host: h, log: log, servers: servers}, nil
}

// serverURLs parses a control plane's URLs, separated by commas.
func serverURLs(list string) ([]string, error) {
	var urls []string
	for u := range strings.SplitSeq(list, ",") {
		u = strings.TrimSuffix(strings.TrimSpace(u), "/")
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			return nil, fmt.Errorf("server url %q: want http(s)://host[:port], or several separated by commas: %w", u, errdefs.ErrInvalid)
		}
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	return urls, nil
}

// sameCluster says whether a registration stored with the control plane
// URLs stored is one with r's: they share a replica. The replicas may
// have changed since (one added, one retired) without a new registration.
func (r *Registrar) sameCluster(stored string) bool {
	old, err := serverURLs(stored)
	return err == nil && slices.ContainsFunc(old, func(u string) bool { return slices.Contains(r.servers, u) })
}

// tokenPin is the cluster CA fingerprint a registration token carries.
func tokenPin(token string) (string, error) {
	i := strings.LastIndex(token, "."+tlscert.FingerprintPrefix)
	if !strings.HasPrefix(token, "roostreg_") || i < 0 {
		return "", fmt.Errorf("registration token carries no cluster CA fingerprint (roostreg_SECRET.sha256:HEX): "+
			"make a new one with 'roost server token' on an up-to-date control plane: %w", errdefs.ErrInvalid)
	}
	pin := token[i+1:]
	if err := tlscert.CheckFingerprint(pin); err != nil {
		return "", fmt.Errorf("registration token: %w", err)
	}
	return pin, nil
}

// Register returns the stored registration when it matches the
// configuration, else registers (again), retrying while the control plane
// is unreachable. A refused registration, or one whose answer does not
// check out, wraps errdefs.ErrInvalid. It returns when ctx ends.
func (r *Registrar) Register(ctx context.Context) (Registration, error) {
	stored, err := ReadRegistration(r.cfg.StateFile)
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return Registration{}, err
	}
	found := err == nil
	if found && r.sameCluster(stored.Server) && stored.URL == r.cfg.AdvertiseURL && stored.Certificate != "" {
		if stored.Server != r.cfg.ServerURL {
			r.log.Info("control plane replicas changed", "was", stored.Server, "now", r.cfg.ServerURL)
			stored.Server = r.cfg.ServerURL
			if err := writeRegistration(r.cfg.StateFile, stored); err != nil {
				return Registration{}, err
			}
		}
		r.log.Info("registration reused", "server", stored.Server, "host", stored.HostID)
		return stored, nil
	}
	if r.cfg.RegistrationToken == "" {
		switch {
		case found && stored.Certificate == "":
			return Registration{}, fmt.Errorf("host %s registered with %s before the agent link used mutual TLS: "+
				"make a registration token ('roost server token') and start the agent once with --registration-token TOKEN; "+
				"the host keeps its ID and its sandboxes keep running: %w", stored.HostID, stored.Server, errdefs.ErrInvalid)
		case found:
			return Registration{}, fmt.Errorf("registered with %s at %s, not with %s at %s: a registration token is needed to register again: %w",
				stored.Server, stored.URL, r.cfg.ServerURL, r.cfg.AdvertiseURL, errdefs.ErrInvalid)
		}
		return Registration{}, fmt.Errorf("not registered with %s: a registration token is needed: %w", r.cfg.ServerURL, errdefs.ErrInvalid)
	}
	var prev *Registration
	if found && r.sameCluster(stored.Server) {
		prev = &stored
	}
	backoff := 250 * time.Millisecond
	for {
		reg, err := r.register(ctx, prev)
		if err == nil {
			if err := writeRegistration(r.cfg.StateFile, reg); err != nil {
				return Registration{}, err
			}
			r.log.Info("host registered", "server", reg.Server, "host", reg.HostID, "url", reg.URL, "again", prev != nil)
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

// Run heartbeats reg until ctx ends, which returns nil. Failed heartbeats
// are logged and retried.
func (r *Registrar) Run(ctx context.Context, reg Registration) error {
	// Sent in heartbeats too: a registration stored before the control
	// plane kept it did not carry it.
	r.volumeDirID = r.host.HostInfo(ctx).VolumeDirID
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

// register calls POST /v1/hosts/register with a fresh key's certificate
// request, and checks the answer: the CA must be the one the registration
// token pins, and the certificate the CA's, for the key. A 4xx answer or
// an answer that does not check out wraps errdefs.ErrInvalid: retrying
// cannot help.
func (r *Registrar) register(ctx context.Context, prev *Registration) (Registration, error) {
	pin, err := tokenPin(r.cfg.RegistrationToken)
	if err != nil {
		return Registration{}, err
	}
	keyPEM, csrPEM, err := tlscert.NewAgentKey()
	if err != nil {
		return Registration{}, err
	}
	info := r.host.HostInfo(ctx)
	body := map[string]any{
		"registrationToken": r.cfg.RegistrationToken, "name": r.cfg.Name, "url": r.cfg.AdvertiseURL,
		"csr": string(csrPEM), "runtime": info.Runtime, "cpus": info.CPUs, "memoryMB": info.MemoryMB,
		"maxSandboxes": info.MaxSandboxes, "capabilities": info.Capabilities, "volumeDirID": info.VolumeDirID,
	}
	if prev != nil {
		body["hostID"], body["token"] = prev.HostID, prev.Token
	}
	var out struct {
		HostID      string `json:"hostID"`
		Token       string `json:"token"`
		Certificate string `json:"certificate"`
		CA          string `json:"ca"`
	}
	if err := r.post(ctx, "/v1/hosts/register", "", body, http.StatusCreated, &out); err != nil {
		return Registration{}, fmt.Errorf("register: %w", err)
	}
	if out.HostID == "" || out.Token == "" {
		return Registration{}, fmt.Errorf("register: no hostID or token in the answer: %w", errdefs.ErrInvalid)
	}
	if _, err := tlscert.CheckAgentCertificate([]byte(out.Certificate), keyPEM, []byte(out.CA), pin, time.Now()); err != nil {
		return Registration{}, fmt.Errorf("register with %s: %w", r.cfg.ServerURL, err)
	}
	return Registration{
		Server: r.cfg.ServerURL, HostID: out.HostID, URL: r.cfg.AdvertiseURL, Token: out.Token,
		Certificate: out.Certificate, Key: string(keyPEM), CA: out.CA,
	}, nil
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
	body := map[string]any{"sandboxes": n, "vcpus": vcpus, "memoryMB": mem, "volumeDirID": r.volumeDirID}
	if err := r.post(ctx, "/v1/hosts/"+reg.HostID+"/heartbeat", reg.Token, body, http.StatusNoContent, nil); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// post makes a call on the replica that last answered, and on the
// others in turn while they cannot be reached or fail.
func (r *Registrar) post(ctx context.Context, path, bearer string, body any, want int, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	first := int(r.current.Load())
	var errs []error
	for i := range r.servers {
		k := (first + i) % len(r.servers)
		err := r.postTo(ctx, r.servers[k], path, bearer, b, want, out)
		if err == nil {
			r.current.Store(int64(k))
			return nil
		}
		if len(r.servers) == 1 || errors.Is(err, errdefs.ErrInvalid) || ctx.Err() != nil {
			return err
		}
		errs = append(errs, fmt.Errorf("%s: %w", r.servers[k], err))
	}
	return errors.Join(errs...)
}

// postTo makes a call on one replica.
func (r *Registrar) postTo(ctx context.Context, server, path, bearer string, b []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, server+path, bytes.NewReader(b))
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
