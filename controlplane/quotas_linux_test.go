package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
)

// quotaTeam is the team of key.
func (e *testenv) quotaTeam(t *testing.T, key string) string {
	t.Helper()
	k, err := e.store.APIKeyByHash(t.Context(), store.HashKey(key))
	if err != nil {
		t.Fatal(err)
	}
	return k.TeamID
}

// setQuota sets the team of key's own limits, as an operator does.
func (e *testenv) setQuota(t *testing.T, key, quota string) {
	t.Helper()
	q, err := store.ParseQuota(quota)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.cp.SetTeamQuota(t.Context(), e.quotaTeam(t, key), q); err != nil {
		t.Fatal(err)
	}
}

// wantQuotaError checks r is E2B's 429 body naming limit.
func wantQuotaError(t *testing.T, r response, limit store.QuotaLimit) {
	t.Helper()
	r.want(t, http.StatusTooManyRequests)
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	r.decode(t, &body)
	if !strings.Contains(body.Message, fmt.Sprintf("team quota %q exceeded", limit)) {
		t.Fatalf("429 message %q does not name the limit %q", body.Message, limit)
	}
}

// quotaExec runs a command in the sandbox with key's team and checks its
// output: the sandbox still works.
func (e *testenv) quotaExec(t *testing.T, key, id string) {
	t.Helper()
	var res execResult
	e.do("POST", "/v1/sandboxes/"+id+"/exec", key, map[string]any{"cmd": "echo ok > /tmp/ok && cat /tmp/ok"}).
		want(t, http.StatusOK).decode(t, &res)
	if res.ExitCode != 0 || strings.TrimSpace(res.Stdout) != "ok" {
		t.Fatalf("sandbox %s: exec answered %+v", id, res)
	}
}

// createAs creates a sandbox with key's team and returns its ID.
func (e *testenv) createAs(t *testing.T, key string, body map[string]any) string {
	t.Helper()
	var c created
	e.do("POST", "/v2/sandboxes", key, body).want(t, http.StatusCreated).decode(t, &c)
	return c.SandboxID
}

// postStatus sends a create from any goroutine (no t.Fatal): its status
// and body.
func (e *testenv) postStatus(key string, body map[string]any) (int, []byte, error) {
	b, _ := json.Marshal(body)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", e.url+"/v2/sandboxes", bytes.NewReader(b))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-API-Key", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	return resp.StatusCode, out, err
}

// floodCreates sends n creates at once with key's team and returns how
// many were created and how many refused with 429 naming the limit.
func (e *testenv) floodCreates(t *testing.T, key string, n int, limit store.QuotaLimit) (created, refused int) {
	t.Helper()
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			st, b, err := e.postStatus(key, map[string]any{"timeout": 600})
			answers[i] = answer{st, b, err}
		})
	}
	wg.Wait()
	for _, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("create: %v", a.err)
		case a.status == http.StatusCreated:
			created++
		case a.status == http.StatusTooManyRequests && bytes.Contains(a.body, []byte(fmt.Sprintf(`team quota \"%s\" exceeded`, limit))):
			refused++
		default:
			t.Errorf("create answered %d %s; want 201 or 429 naming %q", a.status, a.body, limit)
		}
	}
	return created, refused
}

// teamsQuota reads the quota GET /teams shows for key's team.
func (e *testenv) teamsQuota(t *testing.T, key string) (limits, usage map[string]int64) {
	t.Helper()
	var teams []struct {
		Quota struct {
			Limits map[string]int64 `json:"limits"`
			Usage  map[string]int64 `json:"usage"`
		} `json:"quota"`
	}
	e.do("GET", "/teams", key, nil).want(t, http.StatusOK).decode(t, &teams)
	if len(teams) != 1 {
		t.Fatalf("GET /teams listed %d teams", len(teams))
	}
	return teams[0].Quota.Limits, teams[0].Quota.Usage
}

// Creates beyond a team's counted limits answer 429 naming the limit, on
// both databases; GET /teams shows the limits and the use; another team
// is not affected.
func TestQuotaCreate(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		e := newTestenvDB(t, controlplane.Config{TeamQuota: store.Quota{store.LimitMemoryMB: 4096}}, dbURL)
		other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
		if err != nil {
			t.Fatal(err)
		}
		e.setQuota(t, e.key, "sandboxes=2,vcpus=3")
		limits, usage := e.teamsQuota(t, e.key)
		if limits["sandboxes"] != 2 || limits["vcpus"] != 3 || limits["memory-mb"] != 4096 ||
			limits["timeout"] != controlplane.DefaultTeamQuota[store.LimitTimeout] || usage["sandboxes"] != 0 {
			t.Fatalf("GET /teams quota: limits %v usage %v", limits, usage)
		}

		a := e.createAs(t, e.key, map[string]any{"cpuCount": 1})
		wantQuotaError(t, e.do("POST", "/v2/sandboxes", e.key, map[string]any{"cpuCount": 3}), store.LimitVCPUs)
		wantQuotaError(t, e.do("POST", "/v2/sandboxes", e.key, map[string]any{"memoryMB": 4000}), store.LimitMemoryMB)
		b := e.createAs(t, e.key, map[string]any{"cpuCount": 1})
		// E2B's legacy route is the same create.
		wantQuotaError(t, e.do("POST", "/sandboxes", e.key, map[string]any{"templateID": "base"}), store.LimitSandboxes)
		_, usage = e.teamsQuota(t, e.key)
		if usage["sandboxes"] != 2 || usage["vcpus"] != 2 || usage["memory-mb"] != 1024 || usage["disk-mb"] != 4096 {
			t.Fatalf("usage with two default-sized sandboxes of 1 vCPU: %v", usage)
		}
		if n, _ := e.store.CountSandboxes(t.Context(), store.SandboxFilter{TeamID: e.quotaTeam(t, e.key)}); n != 2 {
			t.Fatalf("the team has %d sandbox records after refused creates, want 2", n)
		}
		// The other team creates; the refused team's sandboxes still work.
		e.quotaExec(t, other, e.createAs(t, other, nil))
		e.quotaExec(t, e.key, a)
		// Room again once one is gone.
		e.do("DELETE", "/sandboxes/"+b, e.key, nil).want(t, http.StatusNoContent)
		e.quotaExec(t, e.key, e.createAs(t, e.key, map[string]any{"cpuCount": 1}))
	})
}

// Creates racing for the last slots: exactly the limit succeed.
func TestQuotaConcurrentCreates(t *testing.T) {
	storetest.Run(t, func(t *testing.T, dbURL string) {
		e := newTestenvDB(t, controlplane.Config{}, dbURL)
		e.setQuota(t, e.key, "sandboxes=2")
		created, refused := e.floodCreates(t, e.key, 6, store.LimitSandboxes)
		if created != 2 || refused != 4 {
			t.Fatalf("6 concurrent creates under sandboxes=2: %d created, %d refused; want 2 and 4", created, refused)
		}
	})
}

// A timeout beyond the team's limit is refused with 429 naming the limit
// wherever one is asked for: create, set timeout, connect, refresh,
// resume. Within it, each works.
func TestQuotaTimeout(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	e.setQuota(t, e.key, "timeout=60")
	wantQuotaError(t, e.do("POST", "/v2/sandboxes", e.key, map[string]any{"timeout": 61}), store.LimitTimeout)
	id := e.createAs(t, e.key, map[string]any{"timeout": 60})
	wantQuotaError(t, e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{"timeout": 3600}), store.LimitTimeout)
	wantQuotaError(t, e.do("POST", "/v2/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 3600}), store.LimitTimeout)
	wantQuotaError(t, e.do("POST", "/sandboxes/"+id+"/refreshes", e.key, map[string]any{"duration": 3600}), store.LimitTimeout)
	e.do("POST", "/sandboxes/"+id+"/timeout", e.key, map[string]any{"timeout": 30}).want(t, http.StatusNoContent)
	e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
	wantQuotaError(t, e.do("POST", "/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 120}), store.LimitTimeout)
	if got := e.get(t, id); got.State != "paused" {
		t.Fatalf("a refused resume left the sandbox %s", got.State)
	}
	e.do("POST", "/sandboxes/"+id+"/connect", e.key, map[string]any{"timeout": 60}).want(t, http.StatusCreated)
	e.quotaExec(t, e.key, id)
}

// Paused sandboxes leave the concurrency to others but a resume is
// counted; explicit pauses beyond the paused limit are refused.
func TestQuotaPauseResume(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	e.setQuota(t, e.key, "sandboxes=1,paused=1")
	a := e.createAs(t, e.key, nil)
	e.do("POST", "/sandboxes/"+a+"/pause", e.key, nil).want(t, http.StatusNoContent)
	b := e.createAs(t, e.key, nil)
	wantQuotaError(t, e.do("POST", "/v2/sandboxes/"+a+"/connect", e.key, map[string]any{"timeout": 60}), store.LimitSandboxes)
	wantQuotaError(t, e.do("POST", "/sandboxes/"+a+"/resume", e.key, map[string]any{"timeout": 60}), store.LimitSandboxes)
	if got := e.get(t, a); got.State != "paused" {
		t.Fatalf("a refused resume left the sandbox %s", got.State)
	}
	wantQuotaError(t, e.do("POST", "/sandboxes/"+b+"/pause", e.key, nil), store.LimitPaused)
	e.quotaExec(t, e.key, b)
	e.do("DELETE", "/sandboxes/"+b, e.key, nil).want(t, http.StatusNoContent)
	e.do("POST", "/v2/sandboxes/"+a+"/connect", e.key, map[string]any{"timeout": 60}).want(t, http.StatusCreated)
	e.quotaExec(t, e.key, a)
}

// A paused sandbox past the team's paused-retention is deleted, on its
// agent too; a running one is not touched.
func TestQuotaPausedRetention(t *testing.T) {
	e := newTestenv(t, controlplane.Config{RetentionInterval: 200 * time.Millisecond})
	e.setQuota(t, e.key, "paused-retention=1")
	keep := e.createAs(t, e.key, nil)
	gone := e.createAs(t, e.key, nil)
	e.do("POST", "/sandboxes/"+gone+"/pause", e.key, nil).want(t, http.StatusNoContent)
	deadline := time.Now().Add(time.Minute)
	for e.do("GET", "/sandboxes/"+gone, e.key, nil).status != http.StatusNotFound {
		if time.Now().After(deadline) {
			t.Fatalf("paused sandbox %s still kept a minute after a 1 s retention", gone)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := e.agent.Get(gone); err == nil {
		t.Fatalf("the agent still has retired sandbox %s", gone)
	}
	e.quotaExec(t, e.key, keep)
}

// A disk larger than the agent's free space is refused before anything is
// made, with a message that names the shortfall; one larger than the
// filesystem is a 400.
func TestQuotaDiskFreeSpace(t *testing.T) {
	e := newTestenv(t, controlplane.Config{TeamQuota: store.Quota{store.LimitDiskMB: 1 << 24}})
	free, size := freeMiB(t, os.TempDir()) // the agent's data directory is a t.TempDir
	if want := free + 4096; want < size-2048 && want <= 1<<20 {
		r := e.do("POST", "/v2/sandboxes", e.key, map[string]any{"diskSizeMB": want}).want(t, http.StatusServiceUnavailable)
		if !bytes.Contains(r.body, []byte("MiB short")) {
			t.Fatalf("refusal %s does not name the shortfall", r.body)
		}
	} else {
		t.Logf("free space %d MiB of %d: no disk fits between free and size to test 503", free, size)
	}
	if size+1 <= 1<<20 {
		r := e.do("POST", "/v2/sandboxes", e.key, map[string]any{"diskSizeMB": size + 1}).want(t, http.StatusBadRequest)
		if !bytes.Contains(r.body, []byte("larger than the host's data filesystem")) {
			t.Fatalf("refusal %s does not say why", r.body)
		}
	}
	e.wantNothingMade(t)
	e.quotaExec(t, e.key, e.createAs(t, e.key, nil))
}

// wantNothingMade checks that neither the store nor the agent has a
// sandbox.
func (e *testenv) wantNothingMade(t *testing.T) {
	t.Helper()
	if n, err := e.store.CountSandboxes(t.Context(), store.SandboxFilter{}); err != nil || n != 0 {
		t.Fatalf("the store has %d sandbox records (%v) after refused creates", n, err)
	}
	if got := e.agent.List(); len(got) != 0 {
		t.Fatalf("the agent has %d sandboxes after refused creates", len(got))
	}
}

// freeMiB is the free and total MiB of the filesystem of dir.
func freeMiB(t *testing.T, dir string) (free, size int64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail*uint64(st.Frsize)) >> 20, int64(st.Blocks*uint64(st.Frsize)) >> 20
}

// TestAttackQuotaCreateFlood: a team floods creates; it gets exactly its
// concurrent-sandbox quota, its sandboxes keep working, and another team
// still creates.
func TestAttackQuotaCreateFlood(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	e.setQuota(t, e.key, "sandboxes=3")
	created, refused := e.floodCreates(t, e.key, 12, store.LimitSandboxes)
	if created != 3 || refused != 9 {
		t.Fatalf("a flood of 12 creates under sandboxes=3: %d created, %d refused", created, refused)
	}
	page, _, err := e.store.ListSandboxes(t.Context(), store.SandboxFilter{TeamID: e.quotaTeam(t, e.key)})
	if err != nil || len(page) != 3 || len(e.agent.List()) != 3 {
		t.Fatalf("after the flood: %d records (%v), %d on the agent; want 3", len(page), err, len(e.agent.List()))
	}
	e.quotaExec(t, e.key, page[0].ID)
	e.quotaExec(t, other, e.createAs(t, other, nil))
}

// TestAttackDiskLargerThanHost: a sandbox asks for a disk larger than the
// host has; the create is refused before anything is made, nothing is
// left behind, and the next create works.
func TestAttackDiskLargerThanHost(t *testing.T) {
	e := newTestenv(t, controlplane.Config{TeamQuota: store.Quota{store.LimitDiskMB: 1 << 24}})
	_, size := freeMiB(t, os.TempDir())
	if size+1 > 1<<20 {
		t.Skipf("the test filesystem (%d MiB) is larger than the largest disk a sandbox may ask for", size)
	}
	for _, path := range []string{"/v2/sandboxes", "/sandboxes"} {
		r := e.do("POST", path, e.key, map[string]any{"templateID": "base", "diskSizeMB": size + 1})
		if r.status != http.StatusBadRequest && r.status != http.StatusServiceUnavailable {
			t.Fatalf("a disk larger than the host: %d %s", r.status, r.body)
		}
	}
	e.wantNothingMade(t)
	e.quotaExec(t, e.key, e.createAs(t, e.key, nil))
}
