package controlplane_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// TestAgentLinkUncompressed: the control plane calls agents without
// compression either way, neither sending gzip nor asking for it, though
// the agent here (a Connect handler with its defaults) would compress
// whatever it was asked to: at scale, gzip on this link was the control
// plane's largest cost.
func TestAgentLinkUncompressed(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.Context(), storetest.SQLiteURL(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cp, err := controlplane.New(controlplane.Config{}, st, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Close)
	var mu sync.Mutex
	var seen []string // "procedure request|answer: header=value", of compression either way
	_, h := hostagentv1connect.NewHostAgentServiceHandler(newFakeAgent(0, scaleConfig{hosts: 1}))
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		mu.Lock()
		defer mu.Unlock()
		// The answer's Accept-Encoding is what the agent could take, not
		// what it sent.
		for _, hd := range []struct {
			of      string
			h       http.Header
			headers []string
		}{
			{"request", r.Header, []string{"Content-Encoding", "Accept-Encoding", "Connect-Content-Encoding", "Connect-Accept-Encoding"}},
			{"answer", w.Header(), []string{"Content-Encoding", "Connect-Content-Encoding"}},
		} {
			for _, name := range hd.headers {
				if v := hd.h.Get(name); v != "" && v != "identity" {
					seen = append(seen, r.URL.Path+" "+hd.of+": "+name+"="+v)
				}
			}
		}
	}))
	t.Cleanup(agent.Close)
	if err := cp.AddHost(t.Context(), store.Host{ID: fakeHostName(0), URL: agent.URL}, "token"); err != nil {
		t.Fatal(err) // the agent's GetHostInfo
	}
	key, err := cp.CreateTeamWithKey(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(cp.Handler())
	t.Cleanup(api.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = cp.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := create(t.Context(), api.URL, key); err != nil {
		t.Fatal(err) // the agent's CreateSandbox
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) > 0 {
		t.Errorf("compression on the agent link:\n%s", strings.Join(seen, "\n"))
	}
}
