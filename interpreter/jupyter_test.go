package interpreter

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pythonKernelArgv starts a plain ipykernel, for the start tests.
func pythonKernelArgv(t *testing.T) []string {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import ipykernel").Run(); err != nil {
		t.Skip("no /usr/bin/python3 with ipykernel (scripts/deps.sh installs it)")
	}
	return []string{"/usr/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}", "--InteractiveShell.colors=NoColor"}
}

// A kernel's five ports are five: two the same, and the kernel could not
// bind the second (the server dialled it until its deadline).
func TestFreePortsDistinct(t *testing.T) {
	for range 200 {
		var a, b, c, d, e int
		if err := freePorts(&a, &b, &c, &d, &e); err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for _, p := range []int{a, b, c, d, e} {
			if seen[p] {
				t.Fatalf("port %d given twice: %v", p, []int{a, b, c, d, e})
			}
			seen[p] = true
		}
	}
}

// A kernel that dies as it starts is reported at once with what it
// printed, not dialled until the start's deadline.
func TestJupyterStartEndsWithTheKernel(t *testing.T) {
	started := time.Now()
	_, err := startJupyter(t.Context(), []string{"/bin/sh", "-c", "echo no kernel here >&2; exit 3"}, t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "no kernel here") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("error %v, want the kernel's end and its output", err)
	}
	if d := time.Since(started); d > 5*time.Second {
		t.Errorf("the error took %s", d)
	}
}

// A kernel that finds one of its ports taken (another process bound it
// between the server's choice and the kernel's bind) is started again on
// other ports.
func TestJupyterStartPortTaken(t *testing.T) {
	argv := pythonKernelArgv(t)
	tries := filepath.Join(t.TempDir(), "tries")
	// The first start fails as ipykernel does when a port is taken.
	script := `echo x >> "$0"; if [ "$(wc -l < "$0")" -eq 1 ]; then echo "zmq.error.ZMQError: Address already in use" >&2; exit 1; fi; exec "$@"`
	k, err := startJupyter(t.Context(), append([]string{"/bin/sh", "-c", script, tries}, argv...), t.TempDir(), os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	defer k.close()
	b, _ := os.ReadFile(tries)
	if n := strings.Count(string(b), "x"); n != 2 {
		t.Errorf("%d starts, want 2", n)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got []event
	if err := run(ctx, k, "40 + 2", false, func(e event) { got = append(got, e) }); err != nil {
		t.Fatal(err)
	}
	if len(got) < 2 || got[1]["text"] != "42" {
		t.Errorf("the kernel started again answered %v", got)
	}
}

// A port of the kernel's that something else answers on is a taken port,
// not a kernel that is slow to start: the start is tried again.
func TestJupyterStartForeignSocketOnPort(t *testing.T) {
	k := &jupyterKernel{process: &process{done: make(chan struct{}), out: &tail{max: 64}}, session: newID(), to: map[string]chan message{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	sctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	err = k.start(t.Context(), sctx, connection{IP: "127.0.0.1", ShellPort: port, IOPubPort: port})
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("error %v, want errPortTaken", err)
	}
}
