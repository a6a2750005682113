package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/template/templatetest"
)

// TestHibernatedSurviveReboot runs `roost up` (namespace runtime) as a
// real process with sandboxes that E2B's pause hibernated, then kills it
// (-9) and takes away what a reboot takes: every mount below its data
// directory and the sandboxes' network namespaces. The `roost up` started
// again on the same data directory resumes each sandbox on connect with
// its files and its processes, counting on where they stopped.
func TestHibernatedSurviveReboot(t *testing.T) {
	_, bin, work := processTest(t, "a stack and its sandboxes, twice", "roost-reboot.")
	dataDir := filepath.Join(work, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(templatetest.CacheDir(), "templates"), filepath.Join(dataDir, "templates")); err != nil {
		t.Fatal(err)
	}
	const key = "roost_test_reboot_0123456789abcdef"
	addr := freeAddr(t)
	api := "http://" + addr
	args := []string{"up", "--data-dir", dataDir, "--listen", addr, "--no-prune"}
	env := []string{"ROOST_API_KEY=" + key}
	up := start(t, work, "up", env, bin, args...)
	waitHTTP(t, up, api+"/health")

	type sandbox struct {
		ID              string `json:"sandboxID"`
		EnvdAccessToken string `json:"envdAccessToken"`
	}
	sbs := make([]sandbox, 3)
	for i := range sbs {
		apiCall(t, "POST", api+"/v2/sandboxes", key, `{"templateID":"base","timeout":600}`, 201, &sbs[i])
		exec1(t, api, key, sbs[i].ID, "echo "+sbs[i].ID+" > /home/user/me; "+
			"nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done' >/dev/null 2>&1 &")
	}
	for _, sb := range sbs {
		apiCall(t, "POST", api+"/sandboxes/"+sb.ID+"/pause", key, "", 204, nil)
		var v struct {
			Paused string `json:"paused"`
		}
		apiCall(t, "GET", api+"/v1/sandboxes/"+sb.ID, key, "", 200, &v)
		if v.Paused != "hibernated" {
			t.Fatalf("sandbox %s paused %q, want hibernated", sb.ID, v.Paused)
		}
	}

	up.kill(t)
	reboot(t, dataDir, sbs[0].ID, sbs[1].ID, sbs[2].ID)

	up = start(t, work, "up-after-reboot", env, bin, args...)
	waitHTTP(t, up, api+"/health")
	for _, sb := range sbs {
		began := time.Now()
		apiCall(t, "POST", api+"/v2/sandboxes/"+sb.ID+"/connect", key, `{"timeout":120}`, 201, nil)
		t.Logf("sandbox %s restored in %v", sb.ID, time.Since(began).Round(time.Millisecond))
		if out := exec1(t, api, key, sb.ID, "cat /home/user/me"); out != sb.ID+"\n" {
			t.Errorf("sandbox %s after the reboot: its file reads %q", sb.ID, out)
		}
		first := exec1(t, api, key, sb.ID, "cat /tmp/count")
		time.Sleep(300 * time.Millisecond)
		if again := exec1(t, api, key, sb.ID, "cat /tmp/count"); again == first || first == "" {
			t.Errorf("sandbox %s after the reboot: its process counted %q then %q, want it counting on", sb.ID, first, again)
		}
		apiCall(t, "DELETE", api+"/sandboxes/"+sb.ID, key, "", 204, nil)
	}
}

// reboot takes away what a host's reboot does of roost's: the mounts below
// dataDir and the sandboxes' network namespaces.
func reboot(t *testing.T, dataDir string, ids ...string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- { // deepest last mounted, first gone
		f := strings.Fields(lines[i])
		if len(f) > 1 && strings.HasPrefix(f[1], dataDir+"/") {
			if err := unix.Unmount(f[1], unix.MNT_DETACH); err != nil {
				t.Logf("unmount %s: %v", f[1], err)
			}
		}
	}
	for _, id := range ids {
		if out, err := exec.Command("ip", "netns", "delete", "roost-"+id).CombinedOutput(); err != nil {
			t.Logf("ip netns delete roost-%s: %v: %s", id, err, out)
		}
	}
}

// exec1 runs a shell command in a sandbox through the API and returns its
// stdout.
func exec1(t *testing.T, api, key, id, cmd string) string {
	t.Helper()
	var res struct {
		Stdout   string `json:"stdout"`
		ExitCode int    `json:"exitCode"`
	}
	body, _ := json.Marshal(map[string]string{"cmd": cmd})
	apiCall(t, "POST", api+"/v1/sandboxes/"+id+"/exec", key, string(body), 200, &res)
	return res.Stdout
}
