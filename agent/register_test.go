package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
	"roost.dev/roost/tlscert"
)

type fakeHost struct{}

func (fakeHost) HostInfo(context.Context) HostInfo {
	return HostInfo{Runtime: "namespace", CPUs: 2, MemoryMB: 4096, MaxSandboxes: 100}
}

func (fakeHost) List(...State) []Sandbox {
	return []Sandbox{{Limits: runtime.Limits{VCPUs: 2, MemoryMB: 512}}}
}

// fakeControlPlane accepts the registration token "roostreg_x.<pin>"
// once, signs the agent's request with a real cluster CA (or, with
// wrongCA, another one), and counts the heartbeats of host "h1" with
// token "tok".
type fakeControlPlane struct {
	ca, other  *tlscert.ClusterCA
	mu         sync.Mutex // guards the fields below
	wrongCA    bool
	registered int
	again      string // the hostID of the last registration that had one
	beats      chan map[string]int
}

func newCA(t *testing.T) *tlscert.ClusterCA {
	c, k, err := tlscert.NewClusterCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca, err := tlscert.ParseClusterCA(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func (f *fakeControlPlane) token() string { return "roostreg_x." + f.ca.Fingerprint() }

func (f *fakeControlPlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	switch r.URL.Path {
	case "/v1/hosts/register":
		if body["registrationToken"] != f.token() || f.registered > 0 {
			http.Error(w, `{"code":401}`, http.StatusUnauthorized)
			return
		}
		f.registered++
		f.again, _ = body["hostID"].(string)
		ca := f.ca
		if f.wrongCA {
			ca = f.other
		}
		u, _ := url.Parse(body["url"].(string))
		csr, _ := body["csr"].(string)
		cert, err := ca.SignAgent([]byte(csr), "h1", u.Hostname(), time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"hostID": "h1", "token": "tok", "certificate": string(cert), "ca": string(ca.CertPEM())})
	case "/v1/hosts/h1/heartbeat":
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"code":401}`, http.StatusUnauthorized)
			return
		}
		beat := map[string]int{}
		for k, v := range body {
			n, _ := v.(float64)
			beat[k] = int(n)
		}
		select {
		case f.beats <- beat:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

func TestRegistrar(t *testing.T) {
	cp := &fakeControlPlane{ca: newCA(t), other: newCA(t), beats: make(chan map[string]int, 1)}
	srv := httptest.NewServer(cp)
	defer srv.Close()
	state := filepath.Join(t.TempDir(), RegistrationFile)
	cfg := RegistrarConfig{ServerURL: srv.URL + "/", RegistrationToken: cp.token(), AdvertiseURL: "https://agent:7070",
		StateFile: state, Interval: 10 * time.Millisecond}

	// run registers and heartbeats until the first heartbeat arrives, or
	// until it fails.
	run := func(cfg RegistrarConfig) (Registration, error) {
		r, err := newRegistrar(cfg, fakeHost{}, slog.New(slog.DiscardHandler))
		if err != nil {
			return Registration{}, err
		}
		reg, err := r.Register(t.Context())
		if err != nil {
			return reg, err
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx, reg) }()
		select {
		case err := <-done:
			return reg, err
		case beat := <-cp.beats:
			if beat["sandboxes"] != 1 || beat["vcpus"] != 2 || beat["memoryMB"] != 512 {
				t.Errorf("heartbeat body %v", beat)
			}
		}
		cancel()
		return reg, <-done
	}

	reg, err := run(cfg)
	if err != nil {
		t.Fatalf("first start: %v", err)
	}
	if got, err := ReadRegistration(state); err != nil || got != reg || reg.HostID != "h1" || reg.Token != "tok" ||
		reg.Server != srv.URL || reg.URL != "https://agent:7070" {
		t.Fatalf("stored registration %+v, %v; returned %+v", got, err, reg)
	}
	if _, err := reg.TLS(time.Now()); err != nil {
		t.Fatalf("registration's TLS: %v", err)
	}
	// A restart reuses the registration: the used token is not needed.
	cfg.RegistrationToken = ""
	if _, err := run(cfg); err != nil {
		t.Fatalf("restart: %v", err)
	}
	cp.mu.Lock()
	if cp.registered != 1 {
		t.Errorf("registered %d times, want 1", cp.registered)
	}
	cp.mu.Unlock()
	// A new advertised URL needs a new registration: without a token it
	// is refused up front, with the used one by the control plane.
	cfg.AdvertiseURL = "https://elsewhere:7070"
	if _, err := run(cfg); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("new url, no registration token: %v, want ErrInvalid", err)
	}
	cfg.RegistrationToken = cp.token()
	if _, err := run(cfg); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("new url, used registration token: %v, want ErrInvalid", err)
	}
	// With a fresh token it registers again as the same host.
	cp.mu.Lock()
	cp.registered = 0
	cp.mu.Unlock()
	if _, err := run(cfg); err != nil || cp.again != "h1" {
		t.Errorf("register again: %v, hostID sent %q, want h1", err, cp.again)
	}

	for name, bad := range map[string]RegistrarConfig{
		"no server":            {AdvertiseURL: "https://a", StateFile: state},
		"no advertise":         {ServerURL: "http://s", StateFile: state},
		"plain http advertise": {ServerURL: "http://s", AdvertiseURL: "http://a", StateFile: state},
		"no state":             {ServerURL: "http://s", AdvertiseURL: "https://a"},
		"token without pin":    {ServerURL: "http://s", AdvertiseURL: "https://a", StateFile: state, RegistrationToken: "roostreg_x"},
		"token with bad pin":   {ServerURL: "http://s", AdvertiseURL: "https://a", StateFile: state, RegistrationToken: "roostreg_x.sha256:00"},
	} {
		if _, err := newRegistrar(bad, fakeHost{}, slog.New(slog.DiscardHandler)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// TestRegistrarRefusesAnotherCA: a control plane (or a man in the middle)
// whose CA is not the one the registration token pins is refused, and
// nothing is stored.
func TestRegistrarRefusesAnotherCA(t *testing.T) {
	cp := &fakeControlPlane{ca: newCA(t), other: newCA(t), wrongCA: true, beats: make(chan map[string]int, 1)}
	srv := httptest.NewServer(cp)
	defer srv.Close()
	state := filepath.Join(t.TempDir(), RegistrationFile)
	r, err := newRegistrar(RegistrarConfig{ServerURL: srv.URL, RegistrationToken: cp.token(), AdvertiseURL: "https://agent:7070",
		StateFile: state}, fakeHost{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(t.Context()); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "pinned") {
		t.Fatalf("register with another CA: %v, want ErrInvalid naming the pin", err)
	}
	if _, err := ReadRegistration(state); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("registration stored after a refused CA: %v", err)
	}
}

// TestRegistrarOldRegistration: a registration from before mutual TLS
// (no certificate) is not reused; without a registration token the agent
// says what to do, with one it registers again as the same host.
func TestRegistrarOldRegistration(t *testing.T) {
	cp := &fakeControlPlane{ca: newCA(t), beats: make(chan map[string]int, 1)}
	srv := httptest.NewServer(cp)
	defer srv.Close()
	state := filepath.Join(t.TempDir(), RegistrationFile)
	old := Registration{Server: srv.URL, HostID: "h1", URL: "http://agent:7070", Token: "old-token"}
	if err := writeRegistration(state, old); err != nil {
		t.Fatal(err)
	}
	cfg := RegistrarConfig{ServerURL: srv.URL, AdvertiseURL: "https://agent:7070", StateFile: state}
	r, err := newRegistrar(cfg, fakeHost{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(t.Context()); !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "--registration-token") {
		t.Fatalf("old registration without a token: %v, want ErrInvalid saying what to do", err)
	}
	cfg.RegistrationToken = cp.token()
	if r, err = newRegistrar(cfg, fakeHost{}, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	reg, err := r.Register(t.Context())
	if err != nil || reg.HostID != "h1" || reg.Certificate == "" || cp.again != "h1" {
		t.Fatalf("old registration with a token: %+v, %v (hostID sent %q)", reg, err, cp.again)
	}
}

func TestWriteRegistration(t *testing.T) {
	dir := t.TempDir()
	path := RegistrationPath(dir)
	for _, reg := range []Registration{
		{Server: "http://cp:3000", HostID: "h1", URL: "http://agent:7070", Token: "tok"},
		{Server: "http://cp:3000", HostID: "h2", URL: "http://agent:7070", Token: "other"},
	} {
		if err := writeRegistration(path, reg); err != nil {
			t.Fatal(err)
		}
		if got, err := ReadRegistration(path); err != nil || got != reg {
			t.Errorf("read %+v, %v; want %+v", got, err, reg)
		}
	}
	// The token is a credential: only the agent's user may read it.
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want the registration only", len(entries))
	}
	if err := writeRegistration(filepath.Join(dir, "missing", RegistrationFile), Registration{}); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}

// TestRegistrarReplicas: an agent given several control-plane replicas
// registers and heartbeats through whichever answers, moving on from one
// that is down or failing (5xx) but not from a refusal (4xx); a restart
// with the replica list changed reuses the registration.
func TestRegistrarReplicas(t *testing.T) {
	cp := &fakeControlPlane{ca: newCA(t), other: newCA(t), beats: make(chan map[string]int, 1)}
	up := httptest.NewServer(cp)
	defer up.Close()
	down := httptest.NewServer(cp)
	down.Close() // a replica that died
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"code":503,"message":"store unreachable"}`, http.StatusServiceUnavailable)
	}))
	defer failing.Close()
	state := filepath.Join(t.TempDir(), RegistrationFile)
	cfg := RegistrarConfig{ServerURL: down.URL + ", " + failing.URL + "/," + up.URL, RegistrationToken: cp.token(),
		AdvertiseURL: "https://agent:7070", StateFile: state, Interval: 10 * time.Millisecond}
	r, err := newRegistrar(cfg, fakeHost{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := r.Register(t.Context())
	if err != nil {
		t.Fatalf("register through the live replica: %v", err)
	}
	if want := down.URL + "," + failing.URL + "," + up.URL; reg.Server != want {
		t.Errorf("registration's servers %q, want %q", reg.Server, want)
	}
	if err := r.heartbeat(t.Context(), reg); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}
	<-cp.beats
	if got := r.servers[r.current.Load()]; got != up.URL {
		t.Errorf("calls go to %s, want the live replica %s", got, up.URL)
	}
	// A refusal is final: no other replica is asked.
	bad := reg
	bad.Token = "wrong"
	if err := r.heartbeat(t.Context(), bad); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("refused heartbeat: %v, want ErrInvalid", err)
	}
	// All replicas down: the error names each.
	r2, err := newRegistrar(RegistrarConfig{ServerURL: down.URL + "," + failing.URL, AdvertiseURL: "https://agent:7070",
		StateFile: state}, fakeHost{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.heartbeat(t.Context(), reg); err == nil || !strings.Contains(err.Error(), down.URL) || !strings.Contains(err.Error(), "503") {
		t.Errorf("heartbeat with every replica down: %v", err)
	}
	// A replica added, one retired: the registration is kept, no token.
	cfg = RegistrarConfig{ServerURL: up.URL + ",https://new-replica:3000", AdvertiseURL: "https://agent:7070", StateFile: state}
	r3, err := newRegistrar(cfg, fakeHost{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	again, err := r3.Register(t.Context())
	if err != nil || again.HostID != reg.HostID {
		t.Fatalf("restart with the replicas changed: %+v, %v", again, err)
	}
	if stored, _ := ReadRegistration(state); stored.Server != up.URL+",https://new-replica:3000" {
		t.Errorf("stored servers %q", stored.Server)
	}
	if _, err := newRegistrar(RegistrarConfig{ServerURL: up.URL + ",ftp://x", AdvertiseURL: "https://a", StateFile: state},
		fakeHost{}, slog.New(slog.DiscardHandler)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a bad URL in the list: %v, want ErrInvalid", err)
	}
}
