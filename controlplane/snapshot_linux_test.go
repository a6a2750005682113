package controlplane_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/qemu"
	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/template/templatetest"
)

// v1Sandbox is GET /v1/sandboxes/{id}'s and the snapshot's answer.
type v1Sandbox struct {
	listed
	Runtime      string                `json:"runtime"`
	Capabilities *runtime.Capabilities `json:"capabilities"`
	Hibernated   *bool                 `json:"hibernated"`
	Paused       string                `json:"paused"`
	PauseNote    string                `json:"pauseNote"`
	DiskBytes    *int64                `json:"diskBytes"`
}

func (e *testenv) getV1(t *testing.T, id string) v1Sandbox {
	t.Helper()
	var v v1Sandbox
	e.do("GET", "/v1/sandboxes/"+id, e.key, nil).want(t, http.StatusOK).decode(t, &v)
	return v
}

// wantMessage fails the test unless r's error message contains want.
func (r response) wantMessage(t testing.TB, want string) {
	t.Helper()
	var body struct {
		Message string `json:"message"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || !strings.Contains(body.Message, want) {
		t.Fatalf("error body %s: want a message with %q", r.body, want)
	}
}

// TestSnapshot: on the namespace runtime, which hibernates with CRIU, the
// snapshot endpoint hibernates a sandbox whose processes then come back on
// connect; it refuses with 409 and leaves the sandbox as it was when the
// host's capabilities say it cannot, or when CRIU cannot dump the sandbox
// (E2B's pause then freezes it and says why); GET /v1/sandboxes/{id}
// shows what backs a sandbox, and E2B's GET shows none of it.
func TestSnapshot(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		testSnapshot(t, newTestenvDB(t, controlplane.Config{}, dbURL))
	})
}

func testSnapshot(t *testing.T, e *testenv) {
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	id := e.create(t, map[string]any{"templateID": "base", "timeout": 300}).SandboxID
	snapshot := "/v1/sandboxes/" + id + "/snapshot"

	t.Run("Detail", func(t *testing.T) {
		v := e.getV1(t, id)
		if v.SandboxID != id || v.State != "running" || v.Domain != "localhost" || v.EnvdAccessToken == "" ||
			v.Runtime != "namespace" || v.Capabilities == nil ||
			*v.Capabilities != (runtime.Capabilities{Pause: true, Snapshot: true, Fork: true}) || v.Hibernated == nil || *v.Hibernated {
			t.Fatalf("v1 detail %+v (capabilities %v, hibernated %v)", v, v.Capabilities, v.Hibernated)
		}
		// E2B's GET keeps E2B's shape.
		var raw map[string]any
		e.do("GET", "/sandboxes/"+id, e.key, nil).want(t, http.StatusOK).decode(t, &raw)
		for _, k := range []string{"runtime", "capabilities", "hibernated", "diskBytes"} {
			if _, ok := raw[k]; ok {
				t.Errorf("E2B's GET /sandboxes/{id} has %q: %v", k, slices.Sorted(maps.Keys(raw)))
			}
		}
		e.do("GET", "/v1/sandboxes/"+id, other, nil).want(t, http.StatusNotFound)
		e.do("GET", "/v1/sandboxes/sbnosuchsandbox", e.key, nil).want(t, http.StatusNotFound)
		e.do("GET", "/v1/sandboxes/"+id, "", nil).want(t, http.StatusUnauthorized)
	})

	t.Run("Hibernate", func(t *testing.T) {
		e.exec(t, id, map[string]any{"cmd": "nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done' >/dev/null 2>&1 &"})
		var got v1Sandbox
		e.do("POST", snapshot, e.key, nil).want(t, http.StatusOK).decode(t, &got)
		if got.State != "paused" || got.Hibernated == nil || !*got.Hibernated {
			t.Fatalf("snapshot answer: %+v (hibernated %v)", got, got.Hibernated)
		}
		if v := e.getV1(t, id); v.Paused != "hibernated" || v.DiskBytes == nil || *v.DiskBytes == 0 {
			t.Fatalf("a hibernated sandbox: paused %q, disk %v", v.Paused, v.DiskBytes)
		}
		e.do("POST", "/v1/sandboxes/"+id+"/exec", e.key, map[string]any{"cmd": "true"}).want(t, http.StatusConflict)
		e.do("POST", "/v2/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated)
		count := func() string { return e.exec(t, id, map[string]any{"cmd": "cat /tmp/count"}).Stdout }
		first := count()
		time.Sleep(300 * time.Millisecond)
		if again := count(); again == first || first == "" {
			t.Fatalf("the counting process after the restore: %q then %q, want it counting on", first, again)
		}
		// E2B's pause hibernates too, a restored sandbox as well.
		e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
		if v := e.getV1(t, id); v.Paused != "hibernated" {
			t.Errorf("E2B's pause of a restored sandbox: paused %q (%s), want hibernated", v.Paused, v.PauseNote)
		}
		e.do("POST", "/v2/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated)
	})

	t.Run("RefusedByCapabilities", func(t *testing.T) {
		// A host whose runtime cannot snapshot (as it reports): 409
		// before the agent is asked.
		h, err := e.store.GetHost(t.Context(), "host1")
		if err != nil {
			t.Fatal(err)
		}
		caps := h.Capabilities
		h.Capabilities = json.RawMessage(`{"pause":true,"snapshot":false}`)
		if err := e.store.UpsertHost(t.Context(), h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			h.Capabilities = caps
			if err := e.store.UpsertHost(context.Background(), h); err != nil {
				t.Error(err)
			}
		})
		e.do("POST", snapshot, e.key, nil).want(t, http.StatusConflict).
			wantMessage(t, "sandbox "+id+" runs on the namespace runtime, which cannot snapshot (it can pause)")
		if v := e.getV1(t, id); v.State != "running" {
			t.Fatalf("state %q after a refused snapshot", v.State)
		}
	})

	t.Run("RefusedByAgent", func(t *testing.T) {
		// CRIU cannot dump an MPTCP socket: the snapshot is refused with
		// its reason and the sandbox runs on; E2B's pause freezes it
		// instead, and says why.
		e.exec(t, id, map[string]any{"cmd": "nohup python3 -c 'import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); " +
			"s.bind((\"127.0.0.1\", 9999)); s.listen(); time.sleep(1000)' >/dev/null 2>&1 & sleep 0.3"})
		e.do("POST", snapshot, e.key, nil).want(t, http.StatusConflict).wantMessage(t, "cannot be hibernated")
		if v := e.getV1(t, id); v.State != "running" {
			t.Fatalf("state %q after a refused snapshot", v.State)
		}
		if res := e.exec(t, id, map[string]any{"cmd": "echo alive"}); res.Stdout != "alive\n" {
			t.Fatalf("exec after a refused snapshot: %+v", res)
		}
		e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
		if v := e.getV1(t, id); v.State != "paused" || v.Paused != "frozen" || v.PauseNote == "" {
			t.Fatalf("E2B's pause of a sandbox CRIU cannot dump: state %q, paused %q, note %q", v.State, v.Paused, v.PauseNote)
		}
		e.do("POST", "/v2/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated)
		if res := e.exec(t, id, map[string]any{"cmd": "pkill -x python3; echo back"}); res.Stdout != "back\n" {
			t.Fatalf("exec after resume: %+v", res)
		}
		if v := e.getV1(t, id); v.PauseNote != "" {
			t.Errorf("pause note %q after the resume", v.PauseNote)
		}
	})

	t.Run("Refused", func(t *testing.T) {
		e.do("POST", snapshot, other, nil).want(t, http.StatusNotFound)
		e.do("POST", "/v1/sandboxes/sbnosuchsandbox/snapshot", e.key, nil).want(t, http.StatusNotFound)
		e.do("POST", snapshot, "", nil).want(t, http.StatusUnauthorized)
		e.do("GET", snapshot, e.key, nil).want(t, http.StatusNotFound) // POST only: the catch-all

		// Neither running nor paused: 409 before any agent is asked.
		lost := e.create(t, map[string]any{"templateID": "base", "timeout": 300}).SandboxID
		// Gone from its host too: the reconciler recovers a lost sandbox its
		// host still runs.
		if err := e.agent.Destroy(t.Context(), lost); err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.UpdateSandbox(t.Context(), lost, func(cur *store.Sandbox) error {
			cur.State = store.SandboxLost
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		e.do("POST", "/v1/sandboxes/"+lost+"/snapshot", e.key, nil).want(t, http.StatusConflict).wantMessage(t, "is lost")
		if v := e.getV1(t, lost); v.State != "lost" || v.Hibernated != nil {
			t.Fatalf("v1 detail of a lost sandbox: state %q, hibernated %v", v.State, v.Hibernated)
		}
	})
}

// newQEMUTestenv is the stack with a qemu host. Needs root and qemu
// (TCG is enough); skipped under -short (it boots VMs).
func newQEMUTestenv(t *testing.T) *testenv {
	t.Helper()
	runtimetest.RequireRoot(t)
	if testing.Short() {
		t.Skip("boots VMs")
	}
	guestInit := runtimetest.GuestInit(t)
	newDriver := func(_ string, log *slog.Logger) (runtime.Runtime, error) {
		// Images and the prepared kernel are cached with the templates,
		// where the other qemu tests keep theirs. KVM when it can run
		// guests (the driver checks), else emulation.
		return qemu.New(qemu.Config{DataDir: filepath.Join(templatetest.CacheDir(), "runtime", "qemu"), Init: guestInit}, log), nil
	}
	d, _ := newDriver("", slog.New(slog.DiscardHandler))
	if a := d.Probe(t.Context()); !a.Available {
		t.Skipf("qemu runtime unavailable: %s", a.Reason)
	}
	began := time.Now()
	e := newTestenvRuntime(t, controlplane.Config{}, storetest.SQLiteURL(t), newDriver)
	t.Logf("stack up: %v", time.Since(began))
	return e
}

// TestSnapshotQEMU: a sandbox on a qemu host, through the control plane:
// snapshot hibernates it (running, and again when paused), a repeated
// snapshot is success, and both connect and auto-resume (traffic) restore
// it with its files. Needs root and qemu (TCG is enough); one boot and
// two restores of a 256 MiB guest.
func TestSnapshotQEMU(t *testing.T) {
	e := newQEMUTestenv(t)
	began := time.Now()
	id := e.create(t, map[string]any{"templateID": "base", "timeout": 300, "memoryMB": 256,
		"autoPause": true, "autoResume": map[string]any{"enabled": true}}).SandboxID
	t.Logf("create: %v", time.Since(began))
	v := e.getV1(t, id)
	if v.Runtime != "qemu" || v.Capabilities == nil || *v.Capabilities != (runtime.Capabilities{Pause: true, Snapshot: true, Fork: true, VM: true}) ||
		v.Hibernated == nil || *v.Hibernated {
		t.Fatalf("v1 detail on qemu: runtime %q, capabilities %v, hibernated %v", v.Runtime, v.Capabilities, v.Hibernated)
	}
	if res := e.exec(t, id, map[string]any{"cmd": "echo kept > /tmp/state"}); res.ExitCode != 0 {
		t.Fatalf("write a file: %+v", res)
	}

	snap := func(what string) {
		t.Helper()
		began := time.Now()
		var got v1Sandbox
		e.do("POST", "/v1/sandboxes/"+id+"/snapshot", e.key, nil).want(t, http.StatusOK).decode(t, &got)
		t.Logf("snapshot (%s): %v", what, time.Since(began))
		if got.SandboxID != id || got.State != "paused" || got.Hibernated == nil || !*got.Hibernated || got.Runtime != "qemu" {
			t.Fatalf("snapshot (%s) answer: %+v (hibernated %v)", what, got, got.Hibernated)
		}
		if v := e.getV1(t, id); v.State != "paused" || v.Hibernated == nil || !*v.Hibernated {
			t.Fatalf("after snapshot (%s): state %q, hibernated %v", what, v.State, v.Hibernated)
		}
	}
	check := func(what string) {
		t.Helper()
		res := e.exec(t, id, map[string]any{"args": []string{"cat", "/tmp/state"}})
		if res.Stdout != "kept\n" || res.ExitCode != 0 {
			t.Fatalf("%s: %+v, want the file", what, res)
		}
		if v := e.getV1(t, id); v.State != "running" || v.Hibernated == nil || *v.Hibernated {
			t.Fatalf("%s: state %q, hibernated %v", what, v.State, v.Hibernated)
		}
	}

	// Running → hibernated; again is success; E2B's pause says paused.
	snap("running")
	snap("again")
	e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusConflict)
	e.do("POST", "/v1/sandboxes/"+id+"/exec", e.key, map[string]any{"cmd": "true"}).want(t, http.StatusConflict)
	began = time.Now()
	e.do("POST", "/v2/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 300}).want(t, http.StatusCreated)
	t.Logf("connect (restore): %v", time.Since(began))
	check("after connect")

	// Paused → hibernated; traffic resumes it.
	e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
	snap("paused")
	began = time.Now()
	resp := e.do("GET", "/proxy/"+id+"/49983/health", "", nil)
	t.Logf("auto-resume (restore) by traffic: %v, status %d", time.Since(began), resp.status)
	if resp.status >= 300 {
		t.Fatalf("traffic to the hibernated sandbox: %d %s", resp.status, resp.body)
	}
	check("after auto-resume")
	e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
}
