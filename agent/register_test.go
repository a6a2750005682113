package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

type fakeHost struct{}

func (fakeHost) HostInfo(context.Context) HostInfo {
	return HostInfo{Runtime: "namespace", CPUs: 2, MemoryMB: 4096, MaxSandboxes: 100}
}

func (fakeHost) List(...State) []Sandbox {
	return []Sandbox{{Limits: runtime.Limits{VCPUs: 2, MemoryMB: 512}}}
}

// fakeControlPlane accepts the registration token "reg" once and counts
// the heartbeats of host "h1" with token "tok".
type fakeControlPlane struct {
	mu         sync.Mutex
	registered int
	beats      chan map[string]int
}

func (f *fakeControlPlane) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	switch r.URL.Path {
	case "/v1/hosts/register":
		if body["registrationToken"] != "reg" || f.registered > 0 || body["token"] != "tok" || body["url"] != "http://agent:7070" {
			http.Error(w, `{"code":401}`, http.StatusUnauthorized)
			return
		}
		f.registered++
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"hostID":"h1"}`))
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
	cp := &fakeControlPlane{beats: make(chan map[string]int, 1)}
	srv := httptest.NewServer(cp)
	defer srv.Close()
	state := filepath.Join(t.TempDir(), RegistrationFile)
	cfg := RegistrarConfig{ServerURL: srv.URL + "/", RegistrationToken: "reg", AdvertiseURL: "http://agent:7070",
		Token: "tok", StateFile: state, Interval: 10 * time.Millisecond}

	// run runs a Registrar until its first heartbeat arrives, or until it
	// returns.
	run := func(cfg RegistrarConfig) error {
		r, err := newRegistrar(cfg, fakeHost{}, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx) }()
		select {
		case err := <-done:
			return err
		case beat := <-cp.beats:
			if beat["sandboxes"] != 1 || beat["vcpus"] != 2 || beat["memoryMB"] != 512 {
				t.Errorf("heartbeat body %v", beat)
			}
		}
		cancel()
		return <-done
	}

	if err := run(cfg); err != nil {
		t.Fatalf("first start: %v", err)
	}
	want := Registration{Server: srv.URL, HostID: "h1", URL: "http://agent:7070", Token: "tok"}
	if got, err := ReadRegistration(state); err != nil || got != want {
		t.Fatalf("stored registration %+v, %v; want %+v", got, err, want)
	}
	// A restart reuses the registration: the used token is not needed.
	cfg.RegistrationToken = ""
	if err := run(cfg); err != nil {
		t.Fatalf("restart: %v", err)
	}
	cp.mu.Lock()
	if cp.registered != 1 {
		t.Errorf("registered %d times, want 1", cp.registered)
	}
	cp.mu.Unlock()
	// A new advertised URL needs a new registration: without a token it
	// is refused up front, with the used one by the control plane.
	cfg.AdvertiseURL = "http://elsewhere:7070"
	if err := run(cfg); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("new url, no registration token: %v, want ErrInvalid", err)
	}
	cfg.RegistrationToken = "reg"
	if err := run(cfg); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("new url, used registration token: %v, want ErrInvalid", err)
	}

	for name, bad := range map[string]RegistrarConfig{
		"no server":    {AdvertiseURL: "http://a", Token: "t", StateFile: state},
		"no advertise": {ServerURL: "http://s", Token: "t", StateFile: state},
		"no token":     {ServerURL: "http://s", AdvertiseURL: "http://a", StateFile: state},
		"no state":     {ServerURL: "http://s", AdvertiseURL: "http://a", Token: "t"},
	} {
		if _, err := newRegistrar(bad, fakeHost{}, slog.New(slog.DiscardHandler)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
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
