package firecracker

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// The tests run this test binary as Firecracker: a fake that serves the
// API on --api-sock, checks every request against the API descriptions
// (Firecracker's own, and ours: see apiSpecFiles) and a model of its
// state machine, answers as Firecracker
// does (204, or 400 with a fault_message), and logs each request.
const (
	fakeLogEnv    = "ROOST_FAKE_FIRECRACKER_LOG"    // where the fake logs requests (JSON lines)
	fakeSpecEnv   = "ROOST_FAKE_FIRECRACKER_SPEC"   // absolute paths of the API descriptions, os.PathListSeparator between
	fakeRefuseEnv = "ROOST_FAKE_FIRECRACKER_REFUSE" // a path the fake refuses, for failure tests
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeLogEnv) != "" && len(os.Args) > 1 && os.Args[1] == "--api-sock" {
		os.Exit(runFake(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeRequest is one line of the fake's log.
type fakeRequest struct {
	Pid    int             `json:"pid"`
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Body   json.RawMessage `json:"body,omitempty"`
	Error  string          `json:"error,omitempty"`
	// Drive is, for a snapshot load, the disk the loaded VM opened: the
	// path its snapshot recorded, resolved as Firecracker resolves it
	// (from its working directory).
	Drive string `json:"drive,omitempty"`
}

type fake struct {
	id     string
	specs  []*apiSpec // every request must pass each
	refuse string
	logMu  sync.Mutex
	log    *os.File

	mu         sync.Mutex
	state      string // Not started, Running, Paused
	configured map[string]json.RawMessage
	drive      string // the root drive's path_on_host, which a snapshot records
}

// fakeVMState is what the fake writes as a snapshot's VM state: like
// Firecracker's, it records the path the root drive was opened by.
type fakeVMState struct {
	ID    string `json:"id"`
	Drive string `json:"drive"`
}

func runFake(args []string) int {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	sock := fs.String("api-sock", "", "")
	id := fs.String("id", "", "")
	if err := fs.Parse(args); err != nil || *sock == "" || *id == "" {
		fmt.Fprintln(os.Stderr, "fake firecracker: want --api-sock PATH --id ID")
		return 2
	}
	var specs []*apiSpec
	for _, p := range filepath.SplitList(os.Getenv(fakeSpecEnv)) {
		spec, err := parseAPISpec(p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "fake firecracker:", err)
			return 2
		}
		specs = append(specs, spec)
	}
	logf, err := os.OpenFile(os.Getenv(fakeLogEnv), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	ln, err := net.Listen("unix", *sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake firecracker:", err)
		return 2
	}
	f := &fake{id: *id, specs: specs, refuse: os.Getenv(fakeRefuseEnv), log: logf, state: "Not started", configured: map[string]json.RawMessage{}}
	fmt.Println("fake firecracker: serving", *sock) // the guest console, in a real one
	_ = http.Serve(ln, f)
	return 1
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var out any
	var err error
	for _, spec := range f.specs {
		if err == nil {
			err = spec.check(r.Method, r.URL.RequestURI(), body)
		}
	}
	if err == nil && r.URL.Path == f.refuse {
		err = errors.New("refused by the test")
	}
	if err == nil {
		out, err = f.apply(r.Method, r.URL.Path, body)
	}
	entry := fakeRequest{Pid: os.Getpid(), Method: r.Method, Path: r.URL.Path}
	if len(body) > 0 {
		entry.Body = body
	}
	if err != nil {
		entry.Error = err.Error()
	} else if r.URL.Path == "/snapshot/load" {
		if abs, aerr := filepath.Abs(f.drive); aerr == nil {
			entry.Drive, _ = filepath.EvalSymlinks(abs)
		}
	}
	f.logMu.Lock()
	b, _ := json.Marshal(entry)
	f.log.Write(append(b, '\n'))
	f.logMu.Unlock()
	switch {
	case err != nil:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"fault_message": err.Error()})
	case out != nil:
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(out)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// preBoot are the resources Firecracker accepts only before
// InstanceStart (and not at all on a VM loaded from a snapshot).
var preBoot = map[string]bool{"/machine-config": true, "/boot-source": true, "/drives/": true, "/network-interfaces/": true, "/mmds/config": true}

func resource(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i+1]
	}
	return path
}

// apply models Firecracker's state machine for the requests roost sends.
func (f *fake) apply(method, path string, body []byte) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	str := func(k string) string { s, _ := m[k].(string); return s }
	if method == http.MethodGet && path == "/" {
		return map[string]string{"id": f.id, "state": f.state, "vmm_version": "fake", "app_name": "Firecracker"}, nil
	}
	if preBoot[path] || preBoot[resource(path)] {
		if f.state != "Not started" || f.configured["/snapshot/load"] != nil {
			return nil, errors.New("the requested operation is not supported after starting the microVM")
		}
	}
	switch path {
	case "/boot-source":
		if _, err := os.Stat(str("kernel_image_path")); err != nil {
			return nil, fmt.Errorf("kernel: %v", err)
		}
	case "/drives/" + str("drive_id"):
		if _, err := os.Stat(str("path_on_host")); err != nil {
			return nil, fmt.Errorf("drive: %v", err)
		}
		f.drive = str("path_on_host")
	case "/network-interfaces/" + str("iface_id"):
		if _, err := net.InterfaceByName(str("host_dev_name")); err != nil {
			return nil, fmt.Errorf("open tap device %s: %v", str("host_dev_name"), err)
		}
	case "/mmds/config":
		for _, iface := range m["network_interfaces"].([]any) {
			if f.configured["/network-interfaces/"+iface.(string)] == nil {
				return nil, fmt.Errorf("the MMDS could not be configured: unknown network interface %v", iface)
			}
		}
	case "/mmds":
		// A snapshot holds the MMDS configuration (not its contents).
		if f.configured["/mmds/config"] == nil && f.configured["/snapshot/load"] == nil {
			return nil, errors.New("MMDS is not configured")
		}
	case "/actions":
		if str("action_type") == "InstanceStart" {
			for _, need := range []string{"/machine-config", "/boot-source", "/drives/rootfs"} {
				if f.configured[need] == nil {
					return nil, fmt.Errorf("cannot start: %s not configured", need)
				}
			}
			if f.state != "Not started" {
				return nil, errors.New("the microVM is already running")
			}
			f.state = "Running"
		}
	case "/vm":
		if f.state == "Not started" {
			return nil, errors.New("the microVM is not running")
		}
		f.state = map[string]string{"Paused": "Paused", "Resumed": "Running"}[str("state")]
	case "/snapshot/create":
		if f.state != "Paused" {
			return nil, errors.New("the microVM must be paused to create a snapshot")
		}
		var mc struct {
			TrackDirtyPages bool `json:"track_dirty_pages"`
		}
		_ = json.Unmarshal(f.configured["/machine-config"], &mc)
		if str("snapshot_type") == "Diff" && !mc.TrackDirtyPages && f.configured["/snapshot/load"] == nil {
			return nil, errors.New("diff snapshots need dirty page tracking")
		}
		vs, _ := json.Marshal(fakeVMState{ID: f.id, Drive: f.drive})
		if err := os.WriteFile(str("snapshot_path"), vs, 0o600); err != nil {
			return nil, err
		}
		if err := writeFakeMemory(str("mem_file_path"), str("snapshot_type") == "Diff"); err != nil {
			return nil, err
		}
	case "/snapshot/load":
		if f.state != "Not started" || len(f.configured) > 1 { // only /logger may come first
			return nil, errors.New("loading a snapshot is only allowed on a fresh microVM")
		}
		mb, _ := m["mem_backend"].(map[string]any)
		for _, p := range []string{str("snapshot_path"), fmt.Sprint(mb["backend_path"])} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("load snapshot: %v", err)
			}
		}
		var vs fakeVMState
		if b, err := os.ReadFile(str("snapshot_path")); err != nil || json.Unmarshal(b, &vs) != nil {
			return nil, fmt.Errorf("load snapshot: not a snapshot of the fake: %v", err)
		}
		if _, err := os.Stat(vs.Drive); err != nil {
			return nil, fmt.Errorf("load snapshot: drive: %v", err)
		}
		f.drive = vs.Drive
		f.state = "Paused"
		if m["resume_vm"] == true {
			f.state = "Running"
		}
	}
	f.configured[path] = body
	return nil, nil
}

// Fake guest memory: a full snapshot is 16 KiB with "full" in its first
// page; a diff has only its third page, "diff", and holes elsewhere.
func writeFakeMemory(path string, diff bool) error {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if err := out.Truncate(16 << 10); err != nil {
		return err
	}
	if diff {
		_, err = out.WriteAt([]byte("diff"), 8<<10)
	} else {
		_, err = out.WriteAt([]byte("full"), 0)
	}
	return err
}
