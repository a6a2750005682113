package agent_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/runtimetest"
)

// An agent that wrote sandbox records of version 1 ran a sandbox: its
// record holds no driver state, and the driver kept its own
// (namespace.json). The agent of now re-adopts the sandbox from those,
// records it in the current version, and destroys it whole.
func TestAgentRecoversVersion1Record(t *testing.T) {
	h := newHost(t)
	a := h.start()
	ctx := ctxT(t)
	const token = "upgrade-token"
	sb, err := a.m.Create(ctx, agent.CreateRequest{EnvdToken: token, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	envd := sb.Envd.String()
	mustExec(t, envd, token, "echo kept > ~/file")
	a.stop()
	dir := filepath.Join(h.dataDir, "sandboxes", sb.ID)
	writeVersion1(t, dir)

	b := h.start()
	got, err := b.m.Get(sb.ID)
	if err != nil || got.State != agent.StateRunning || got.Envd != sb.Envd {
		t.Fatalf("re-adopted: %+v, %v", got, err)
	}
	if out := mustExec(t, envd, token, "cat ~/file"); out != "kept\n" {
		t.Errorf("after re-adoption: %q", out)
	}
	var rec struct {
		Version int                 `json:"version"`
		Driver  runtime.DriverState `json:"driver"`
	}
	readJSON(t, filepath.Join(dir, "sandbox.json"), &rec)
	if rec.Version != 4 || rec.Driver.IsZero() {
		t.Errorf("record after re-adoption: version %d, driver state %s", rec.Version, rec.Driver.Data)
	}
	if err := b.m.Destroy(ctx, sb.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state dir after destroy: %v", err)
	}
}

// writeVersion1 rewrites the sandbox record in dir as an agent of record
// version 1 wrote it, and the driver's state as the namespace driver kept
// it then.
func writeVersion1(t *testing.T, dir string) {
	t.Helper()
	var rec map[string]json.RawMessage
	readJSON(t, filepath.Join(dir, "sandbox.json"), &rec)
	var st runtime.DriverState
	if err := json.Unmarshal(rec["driver"], &st); err != nil || st.IsZero() {
		t.Fatalf("driver state in the record: %s, %v", rec["driver"], err)
	}
	delete(rec, "driver")
	rec["version"] = json.RawMessage("1")
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sandbox.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	runtimetest.WriteLegacyState(t, dir, "namespace.json", st)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
