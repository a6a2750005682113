package namespace_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/runtime/runtimetest"
)

// hostLeftovers lists what roost sandboxes leave on the host: network
// namespaces, host veths, overlay mounts and cgroups with the roost prefix.
func hostLeftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), "roost-") {
				out = append(out, "netns "+e.Name())
			}
		}
	}
	if ifs, err := net.Interfaces(); err == nil {
		for _, i := range ifs {
			if strings.HasPrefix(i.Name, "roost-") {
				out = append(out, "link "+i.Name)
			}
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, " - overlay roost-") {
				out = append(out, "mount "+line)
			}
		}
	}
	for _, ctrl := range []string{"memory", "pids", "freezer", "cpu", "unified", ""} {
		if ents, err := os.ReadDir("/sys/fs/cgroup/" + ctrl + "/roost"); err == nil {
			for _, e := range ents {
				if e.IsDir() {
					out = append(out, "cgroup "+ctrl+"/roost/"+e.Name())
				}
			}
		}
	}
	return out
}

func TestFiftyAtOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	d := newDriver(t)
	nw := runtimetest.Network(t)
	before := len(hostLeftovers(t))
	const n = 50
	sbs := make([]*runtimetest.Sandbox, n)
	for i := range sbs {
		sbs[i] = runtimetest.Start(t, d, nw, runtimetest.Options{})
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, sb := range sbs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			r, err := sb.Exec(ctx, fmt.Sprintf("echo %d; hostname", i))
			if err != nil || r.Stdout != fmt.Sprintf("%d\n%s\n", i, sb.Spec.ID) {
				errs <- fmt.Errorf("sandbox %d: %q %v", i, r.Stdout, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(hostLeftovers(t)) - before; got < n {
		t.Errorf("only %d roost objects for %d sandboxes", got, n)
	}
}

func TestCreateDestroyCyclesLeaveNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	d := newDriver(t)
	nw := runtimetest.Network(t)
	before := hostLeftovers(t)
	ctx := context.Background()
	const cycles = 200
	for i := range cycles {
		sb := runtimetest.StartBare(t, d, nw, runtimetest.Options{})
		if err := sb.Close(ctx); err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
	}
	after := hostLeftovers(t)
	if strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("leftovers after %d cycles:\nbefore %v\nafter %v", cycles, before, after)
	}
	if out, _ := exec.Command("losetup", "-a").Output(); strings.Contains(string(out), "roost") {
		t.Errorf("loop devices left: %s", out)
	}
}
