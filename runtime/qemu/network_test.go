package qemu_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime/runtimetest"
)

// TestNetwork checks what the NAT in the sandbox's namespace promises:
// every port of the guest is reachable on the sandbox's slot address
// (servers on loopback too, through envd's forwarder), and the guest is
// held to the same isolation as a namespace sandbox.
func TestNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM")
	}
	d := newDriver(t)
	nw := runtimetest.Network(t)
	sb := runtimetest.Start(t, d, nw, runtimetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if got := strings.TrimSpace(sb.MustExec(t, "ip -4 -o addr show eth0 | awk '{print $4}'")); got != "10.0.2.2/30" {
		t.Errorf("guest address %q, want the fixed 10.0.2.2/30", got)
	}

	t.Run("user ports reachable on the slot address", func(t *testing.T) {
		sb.MustExec(t, "mkdir -p /srv/www && echo hello-vm > /srv/www/index.html && (cd /srv/www && nohup python3 -m http.server 8080 >/dev/null 2>&1 &)")
		sb.MustExec(t, "mkdir -p /srv/lo && echo hello-lo > /srv/lo/index.html && (cd /srv/lo && nohup python3 -m http.server 8081 --bind 127.0.0.1 >/dev/null 2>&1 &)")
		addr := sb.Instance.Envd.Addr()
		for port, want := range map[int]string{8080: "hello-vm", 8081: "hello-lo"} {
			url := fmt.Sprintf("http://%s:%d/", addr, port)
			var body string
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				c := &http.Client{Timeout: 2 * time.Second}
				if resp, err := c.Get(url); err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					body = strings.TrimSpace(string(b))
					if body == want {
						break
					}
				}
				time.Sleep(100 * time.Millisecond)
			}
			if body != want {
				t.Errorf("%s: got %q, want %q", url, body, want)
			}
		}
	})

	t.Run("egress limited", func(t *testing.T) {
		out, err := exec.Command("tc", "-n", filepath.Base(sb.Spec.Network.Netns), "qdisc", "show", "dev", sb.Spec.Network.Interface).CombinedOutput()
		if err != nil {
			t.Skipf("tc qdisc: %v: %s", err, out)
		}
		if !strings.Contains(string(out), "tbf") || !strings.Contains(string(out), "rate 1600Mbit") {
			t.Errorf("no 200 MB/s tbf on the sandbox's interface: %s", out)
		}
	})

	t.Run("host services unreachable", func(t *testing.T) {
		port := runtimetest.HostListener(t)
		for _, target := range []string{sb.Spec.Network.Gateway.String(), "10.0.2.1"} {
			if sb.Reaches(ctx, target, port) {
				t.Errorf("guest reached a host listener at %s:%d", target, port)
			}
		}
	})
}
