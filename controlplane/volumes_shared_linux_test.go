package controlplane_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

// TestVolumesSharedDir runs two more agents whose volume directory is one
// shared directory (NFS's part, which this machine's kernel cannot
// mount: docs/persistence.md): a volume written by a sandbox on its host
// is mounted by a sandbox on the other host once the first may take no
// sandbox, moving with it; its content API follows it; a second writer
// is 409 while the new host's sandbox holds it.
func TestVolumesSharedDir(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	ctx := t.Context()
	// host1 has a volume directory of its own: it takes no sandbox here.
	if err := e.store.SetHostState(ctx, "host1", store.HostDraining); err != nil {
		t.Fatal(err)
	}
	shared := t.TempDir()
	for _, id := range []string{"host2", "host3"} {
		e.addSharedAgent(t, id, shared)
	}
	hosts := map[string]store.Host{}
	for _, id := range []string{"host1", "host2", "host3"} {
		h, err := e.store.GetHost(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		hosts[id] = h
	}
	if dir := hosts["host2"].VolumeDirID; dir == "" || hosts["host3"].VolumeDirID != dir || hosts["host1"].VolumeDirID == dir {
		t.Fatalf("volume dir IDs: host1 %q, host2 %q, host3 %q; want host2's and host3's the same, host1's another",
			hosts["host1"].VolumeDirID, hosts["host2"].VolumeDirID, hosts["host3"].VolumeDirID)
	}

	vol := e.createVolume(t, map[string]any{"name": "data", "sizeMB": 64})
	home := e.volumeHost(t, vol.VolumeID)
	mount := map[string]any{"volumeMounts": []map[string]any{{"name": "data", "path": "/mnt/data"}}}
	first := e.create(t, mount)
	if first.ClientID != home {
		t.Fatalf("sandbox with the volume on %s, want its host %s", first.ClientID, home)
	}
	if res := e.exec(t, first.SandboxID, map[string]any{"cmd": "echo shared > /mnt/data/note"}); res.ExitCode != 0 {
		t.Fatalf("write to the volume: %+v", res)
	}
	e.do("DELETE", "/sandboxes/"+first.SandboxID, e.key, nil).want(t, http.StatusNoContent)

	if err := e.store.SetHostState(ctx, home, store.HostDraining); err != nil {
		t.Fatal(err)
	}
	second := e.create(t, mount)
	if second.ClientID == home || second.ClientID == "host1" {
		t.Fatalf("sandbox with the volume on %s; want the other host of the shared directory", second.ClientID)
	}
	if got := e.volumeHost(t, vol.VolumeID); got != second.ClientID {
		t.Fatalf("volume on %s after the move, want %s", got, second.ClientID)
	}
	res := e.exec(t, second.SandboxID, map[string]any{"cmd": "cat /mnt/data/note && echo more >> /mnt/data/note"})
	if res.ExitCode != 0 || res.Stdout != "shared\n" {
		t.Fatalf("the other host's sandbox reads %+v", res)
	}
	r := e.content(t, "GET", "file", vol.VolumeID, vol.Token, url.Values{"path": {"/note"}}, nil).want(t, http.StatusOK)
	if string(r.body) != "shared\nmore\n" {
		t.Fatalf("content API reads %q", r.body)
	}

	// A second writer is refused while the sandbox holds it, even where
	// the volume could move: it does not move from under a sandbox.
	if err := e.store.SetHostState(ctx, home, store.HostReady); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SetHostState(ctx, second.ClientID, store.HostDraining); err != nil {
		t.Fatal(err)
	}
	r = e.do("POST", "/v2/sandboxes", e.key, mount).want(t, http.StatusConflict)
	if !strings.Contains(string(r.body), second.SandboxID) {
		t.Fatalf("409 %s does not name sandbox %s", r.body, second.SandboxID)
	}
	if got := e.volumeHost(t, vol.VolumeID); got != second.ClientID {
		t.Fatalf("volume moved to %s from under its sandbox on %s", got, second.ClientID)
	}
	e.do("DELETE", "/sandboxes/"+second.SandboxID, e.key, nil).want(t, http.StatusNoContent)
	e.do("DELETE", "/volumes/"+vol.VolumeID, e.key, nil).want(t, http.StatusNoContent)
}

// volumeHost is the host the store has volume id on.
func (e *testenv) volumeHost(t *testing.T, id string) string {
	t.Helper()
	v, err := e.store.GetVolume(t.Context(), "", id)
	if err != nil {
		t.Fatal(err)
	}
	return v.HostID
}

// addSharedAgent starts another in-process agent, host id, whose volume
// directory is volumeDir, and adds it to the control plane.
func (e *testenv) addSharedAgent(t *testing.T, id, volumeDir string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "agent", "host", id)
	dataDir := t.TempDir()
	m := startAgentConfig(t, agent.Config{
		DataDir: dataDir, Envd: runtimetest.Envd(t), Version: "test", SkipPrune: true,
		Blobs: content.NewBlobs(filepath.Join(dataDir, "blobs")), VolumeDir: volumeDir,
	}, func(dataDir string, log *slog.Logger) (runtime.Runtime, error) {
		return namespace.New(namespace.Config{DataDir: filepath.Join(dataDir, "runtime", "namespace")}, log)
	}, log, testSlots)
	srv := httptest.NewServer(agent.NewServer(m, agent.ServerConfig{Token: agentToken}, log).Handler())
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, sb := range m.List() {
			if err := m.Destroy(dctx, sb.ID); err != nil {
				t.Errorf("cleanup: destroy %s: %v", sb.ID, err)
			}
		}
		srv.Close()
		m.Close()
		unmountBelow(t, dataDir)
	})
	if err := e.cp.AddHost(t.Context(), store.Host{ID: id, URL: srv.URL}, agentToken); err != nil {
		t.Fatal(err)
	}
}
