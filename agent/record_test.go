package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"roost.dev/roost/runtime"
)

func sampleRecord() record {
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	return record{
		Version: recordVersion, ID: "abc123", Template: "base", State: StatePaused, Error: "",
		Slot: 17,
		Spec: runtime.Spec{
			ID: "abc123", StateDir: "/var/lib/roost/sandboxes/abc123", RootFS: "/var/lib/roost/templates/base/rootfs",
			Envd: "/usr/local/bin/envd", Env: map[string]string{"PATH": "/usr/bin"}, Hostname: "abc123",
			Limits: runtime.Limits{VCPUs: 2, MemoryMB: 512, DiskMB: 2048, Pids: 100},
			Network: runtime.Network{
				Netns: "/run/netns/roost-abc123", Interface: "eth0",
				Address: netip.MustParsePrefix("10.201.0.70/30"), Gateway: netip.MustParseAddr("10.201.0.69"),
			},
		},
		Driver:   runtime.DriverState{Version: 1, Data: json.RawMessage(`{"id":"abc123","pid":4242}`)},
		Metadata: map[string]string{"user": "ada"}, Internet: true, AutoPause: true, EnvdToken: "tok",
		Envd: netip.MustParseAddrPort("10.201.0.70:49983"), Pid: 4242, TimeoutSecs: 300,
		Started: at, EndAt: at.Add(5 * time.Minute), StateChanged: at.Add(time.Minute),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := sampleRecord()
	if err := writeRecord(dir, want); err != nil {
		t.Fatal(err)
	}
	got, hdr, err := readRecord(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The driver's state is kept as JSON, whitespace aside.
	var compact bytes.Buffer
	if err := json.Compact(&compact, got.Driver.Data); err != nil {
		t.Fatal(err)
	}
	got.Driver.Data = compact.Bytes()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if hdr.ID != want.ID || hdr.Slot == nil || *hdr.Slot != want.Slot {
		t.Errorf("header = %+v", hdr)
	}
	// Overwriting replaces the record and leaves no temporary file.
	want.State, want.Error = StateError, "boom"
	if err := writeRecord(dir, want); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := readRecord(dir); got.State != StateError || got.Error != "boom" {
		t.Errorf("after overwrite: %s %q", got.State, got.Error)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != recordFile {
		t.Errorf("dir holds %v, want only %s", entries, recordFile)
	}
	if st, _ := os.Stat(filepath.Join(dir, recordFile)); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 (it holds the envd token)", st.Mode().Perm())
	}
}

func TestRecordVersion(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		check      func(t *testing.T, hdr recordHeader, err error)
	}{
		{"newer version", `{"version": 5, "id": "abc", "slot": 9, "somethingNew": true}`, func(t *testing.T, hdr recordHeader, err error) {
			if !errors.Is(err, errRecordVersion) {
				t.Errorf("err = %v, want errRecordVersion", err)
			}
			if hdr.ID != "abc" || hdr.Slot == nil || *hdr.Slot != 9 {
				t.Errorf("header = %+v, want id and slot kept", hdr)
			}
		}},
		{"no version", `{"id": "abc", "slot": 9, "state": "running"}`, func(t *testing.T, _ recordHeader, err error) {
			if !errors.Is(err, errRecordVersion) {
				t.Errorf("err = %v, want errRecordVersion", err)
			}
		}},
		{"corrupt", `{"version": 1, "id": `, func(t *testing.T, _ recordHeader, err error) {
			if err == nil || errors.Is(err, errRecordVersion) {
				t.Errorf("err = %v, want a parse error", err)
			}
		}},
		{"missing state", `{"version": 1, "id": "abc", "slot": 3}`, func(t *testing.T, _ recordHeader, err error) {
			if err == nil {
				t.Error("record without a state accepted")
			}
		}},
		{"unknown state", `{"version": 1, "id": "abc", "slot": 3, "state": "sleeping"}`, func(t *testing.T, _ recordHeader, err error) {
			if err == nil {
				t.Error("record with an unknown state accepted")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, recordFile), []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, hdr, err := readRecord(dir)
			tc.check(t, hdr, err)
		})
	}
	if _, _, err := readRecord(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing record: %v, want fs.ErrNotExist", err)
	}
}

// A record of version 1, as an agent of that version wrote it, holds no
// driver state (the drivers kept their own): it is read, and written back
// as the current version, still without one, so the runtime reads its own
// state file.
func TestRecordVersion1(t *testing.T) {
	dir := t.TempDir()
	v1 := `{
  "version": 1,
  "id": "old1",
  "template": "base",
  "state": "running",
  "slot": 4,
  "spec": {
    "ID": "old1",
    "StateDir": "/var/lib/roost/sandboxes/old1",
    "RootFS": "/var/lib/roost/templates/base/rootfs",
    "Envd": "/usr/local/bin/envd",
    "Env": null,
    "Hostname": "old1",
    "Metadata": null,
    "Limits": {"VCPUs": 2, "MemoryMB": 512, "DiskMB": 2048, "Pids": 4096},
    "Network": {"Netns": "/run/netns/roost-old1", "Interface": "eth0", "Address": "10.201.0.18/30", "Gateway": "10.201.0.17"}
  },
  "internet": true,
  "envdToken": "tok",
  "envd": "10.201.0.18:49983",
  "pid": 777,
  "timeoutSeconds": 300,
  "started": "2025-03-04T05:06:07Z",
  "endAt": "2025-03-04T05:11:07Z",
  "stateChanged": "2025-03-04T05:06:08Z"
}`
	if err := os.WriteFile(filepath.Join(dir, recordFile), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	rec, _, err := readRecord(dir)
	if err != nil {
		t.Fatalf("read a version 1 record: %v", err)
	}
	if rec.ID != "old1" || rec.State != StateRunning || rec.Slot != 4 || rec.Pid != 777 || rec.Spec.Limits.Pids != 4096 ||
		rec.Spec.Network.Address != netip.MustParsePrefix("10.201.0.18/30") || rec.EnvdToken != "tok" || !rec.Driver.IsZero() {
		t.Errorf("version 1 record read as %+v", rec)
	}
	if err := writeRecord(dir, rec); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, recordFile))
	if !bytes.Contains(b, []byte(fmt.Sprintf(`"version": %d`, recordVersion))) || bytes.Contains(b, []byte(`"driver"`)) {
		t.Errorf("rewritten record:\n%s", b)
	}
	again, _, err := readRecord(dir)
	if err != nil || !again.Driver.IsZero() || again.Pid != 777 {
		t.Errorf("read back: %+v, %v", again, err)
	}
}

func TestRecordCloneSharesNoMaps(t *testing.T) {
	r := sampleRecord()
	c := r.clone()
	c.Metadata["user"] = "grace"
	c.Spec.Env["PATH"] = "/bin"
	c.Driver.Data[0] = 'X'
	if r.Metadata["user"] != "ada" || r.Spec.Env["PATH"] != "/usr/bin" || r.Driver.Data[0] != '{' {
		t.Error("clone shares maps with the original")
	}
}

func TestRemoveStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sb")
	if err := os.MkdirAll(filepath.Join(dir, "upper", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := removeStateDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dir still there: %v", err)
	}
	// A directory with a mount at or below it is refused. / is a mount
	// everywhere, and so is /proc.
	for _, d := range []string{"/", "/proc"} {
		if mounted, err := mountBelow(d); err != nil || mounted != d {
			t.Errorf("mountBelow(%s) = %q, %v", d, mounted, err)
		}
		if mounted, err := mountedBelowByTable(d); err != nil || mounted == "" {
			t.Errorf("mountedBelowByTable(%s) = %q, %v", d, mounted, err)
		}
	}
	if mounted, err := mountBelow(t.TempDir()); err != nil || mounted != "" {
		t.Errorf("mountBelow(a fresh directory) = %q, %v", mounted, err)
	}
}

func TestSandboxesUsing(t *testing.T) {
	data := t.TempDir()
	if ids, err := SandboxesUsing(data, "base"); err != nil || len(ids) != 0 {
		t.Fatalf("empty data dir: %v %v", ids, err)
	}
	for _, tc := range []struct{ id, tpl string }{{"a1", "base"}, {"b2", "other"}, {"c3", "base"}} {
		rec := sampleRecord()
		rec.ID, rec.Template = tc.id, tc.tpl
		dir := filepath.Join(data, "sandboxes", tc.id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := writeRecord(dir, rec); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(data, "sandboxes", "no-record"), 0o700)
	ids, err := SandboxesUsing(data, "base")
	slices.Sort(ids)
	if err != nil || !slices.Equal(ids, []string{"a1", "c3"}) {
		t.Fatalf("got %v, %v", ids, err)
	}
}
