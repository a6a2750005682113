package interpreter

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// driverCase is code of one language with a driver of ours (repl.go),
// for the same steps in each.
type driverCase struct {
	lang       string
	set, get   string // get's value is "42" after set
	print      string // prints "out" to stdout and "err" to stderr
	fail, name string // fail's error is named name
	loop       string // runs until interrupted
	die        string // ends the kernel
	env        string // ROOST_ONE_RUN's value as main result (empty: refused)
}

var driverCases = []driverCase{
	{
		lang: "bash", set: "x=41", get: "echo $((x + 1))",
		print: "echo out; echo err >&2", fail: "false", name: "ExitStatus",
		loop: "while :; do sleep 0.1; done", die: "exit 3", env: `echo "$ROOST_ONE_RUN"`,
	},
	{
		lang: "javascript", set: "const x = await Promise.resolve(41)", get: "x + 1",
		print: "console.log('out'); console.error('err')", fail: "null.f()", name: "TypeError",
		loop: "while (true) {}", die: "process.exit(3)", env: "process.env.ROOST_ONE_RUN",
	},
	{
		lang: "typescript", set: "const x: number = 41\ninterface P { v: number }", get: "({ v: x + 1 } as P).v",
		print: "console.log('out'); console.error('err')", fail: "throw new RangeError('no')", name: "RangeError",
		loop: "await new Promise(() => {})", die: "process.exit(3)", env: "process.env.ROOST_ONE_RUN",
	},
	{
		lang: "java", set: "int x = 41;", get: "x + 1",
		print: `System.out.println("out"); System.err.println("err");`, fail: "Object o = null; o.hashCode();", name: "java.lang.NullPointerException",
		loop: "while (true) {}", die: "System.exit(3);",
	},
}

// TestDrivers runs each language of ours, where its program is installed:
// state kept from run to run, output, errors, an interrupt, a kernel that
// dies, env vars for one run.
func TestDrivers(t *testing.T) {
	url := newTestServer(t)
	cfg := Config{Node: "/usr/bin/node", Bash: "/bin/bash", Java: "/usr/bin/java"}
	for _, tc := range driverCases {
		t.Run(tc.lang, func(t *testing.T) {
			if !languages[tc.lang].installed(cfg) {
				t.Skipf("no %s kernel here (scripts/deps.sh installs it)", tc.lang)
			}
			testDriver(t, url, tc)
		})
	}
}

func testDriver(t *testing.T, url string, tc driverCase) {
	ctx := t.Context()
	var c contextJSON
	post(t, url+"/contexts", map[string]any{"language": tc.lang}, http.StatusOK, &c)
	in := func(code string) []event {
		return executeOK(t, ctx, url, map[string]any{"code": code, "context_id": c.ID})
	}
	in(tc.set)
	if got := value(in(tc.get)); got != "42" {
		t.Errorf("%s after %s: %q", tc.get, tc.set, got)
	}
	if n := of(in(tc.get), "number_of_executions"); len(n) != 1 || n[0]["execution_count"] != float64(3) {
		t.Errorf("execution count %v, want 3", n)
	}
	ev := in(tc.print)
	if out, errs := streamText(ev, "stdout"), streamText(ev, "stderr"); out != "out\n" || errs != "err\n" {
		t.Errorf("stdout %q, stderr %q", out, errs)
	}
	if e := of(in(tc.fail), "error"); len(e) != 1 || e[0]["name"] != tc.name {
		t.Errorf("%s: %v, want an error named %s", tc.fail, e, tc.name)
	}

	// A run whose client goes away is interrupted; the context keeps its
	// state.
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	b, _ := json.Marshal(map[string]any{"code": tc.loop, "context_id": c.ID})
	req, _ := http.NewRequestWithContext(short, http.MethodPost, url+"/execute", bytes.NewReader(b))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if got := value(in(tc.get)); got != "42" {
		t.Errorf("after an interrupted run: %q", got)
	}

	if tc.env != "" {
		ev, _ := execute(t, ctx, url, map[string]any{"code": tc.env, "context_id": c.ID, "env_vars": map[string]string{"ROOST_ONE_RUN": "it's \"here\""}})
		if got := value(ev); got != `it's "here"` {
			t.Errorf("env var for one run: %q in %v", got, ev)
		}
		if got := value(in(tc.env)); got != "" && got != "undefined" {
			t.Errorf("env var after its run: %q", got)
		}
	} else if _, status := execute(t, ctx, url, map[string]any{"code": tc.get, "context_id": c.ID, "env_vars": map[string]string{"A": "b"}}); status != http.StatusBadRequest {
		t.Errorf("env vars in %s: %d, want 400", tc.lang, status)
	}

	if e := of(in(tc.die), "error"); len(e) != 1 || e[0]["name"] != "KernelDied" {
		t.Errorf("a kernel that died: %v", e)
	}
	in(tc.set)
	if got := value(in(tc.get)); got != "42" {
		t.Errorf("in the kernel started after one died: %q", got)
	}
}

// streamText is the text of a stream's lines.
func streamText(events []event, name string) string {
	var b strings.Builder
	for _, e := range of(events, name) {
		b.WriteString(e["text"].(string))
	}
	return b.String()
}

// value is the last result's text, or else stdout's (bash's values),
// trimmed.
func value(events []event) string {
	if r := of(events, "result"); len(r) > 0 {
		s, _ := r[len(r)-1]["text"].(string)
		return strings.TrimSpace(s)
	}
	return strings.TrimSpace(streamText(events, "stdout"))
}

// TestBashOutput streams 100 MB through a bash context and finds the run's
// end after the last of it.
func TestBashOutput(t *testing.T) {
	url := newTestServer(t)
	ev, _ := execute(t, t.Context(), url, map[string]any{"code": "head -c 104857600 /dev/zero | tr '\\0' x; echo; echo done", "language": "bash"})
	out := streamText(ev, "stdout")
	if len(out) != 100<<20+len("\ndone\n") || !strings.HasSuffix(out, "x\ndone\n") {
		t.Errorf("%d bytes of stdout ending %q", len(out), out[max(0, len(out)-20):])
	}
}

func TestMarkSplitter(t *testing.T) {
	const mark = "roost-sync-abc"
	for _, tc := range []struct {
		chunks []string
		text   string
	}{
		{[]string{"hello " + mark}, "hello "},
		{[]string{"hel", "lo roost-sy", "nc-abc"}, "hello "},
		{[]string{"roost-", "not a mark ", mark}, "roost-not a mark "},
		{[]string{"é🎉"[:3], "é🎉"[3:] + mark}, "é🎉"},
	} {
		s := markSplitter{mark: []byte(mark)}
		var got []byte
		marked := false
		for _, c := range tc.chunks {
			text, m := s.feed([]byte(c))
			if !strings.HasPrefix(tc.text, string(got)+string(text)) || !utf8.Valid(text) {
				t.Errorf("%q: passed on %q after %q", tc.chunks, text, got)
			}
			got = append(got, text...)
			marked = marked || m
		}
		if string(got) != tc.text || !marked {
			t.Errorf("%q: %q marked %v, want %q", tc.chunks, got, marked, tc.text)
		}
	}
}

func TestSplitStream(t *testing.T) {
	text := strings.Repeat("é", maxText) // 2 bytes a character
	parts := splitStream(event{"type": "stdout", "text": text})
	var joined strings.Builder
	for _, p := range parts {
		s := p["text"].(string)
		if len(s) > maxText || !utf8.ValidString(s) || p["type"] != "stdout" {
			t.Fatalf("a line of %d bytes, valid %v", len(s), utf8.ValidString(s))
		}
		joined.WriteString(s)
	}
	if len(parts) != 2 || joined.String() != text {
		t.Errorf("%d lines; joined equal: %v", len(parts), joined.String() == text)
	}
	if r := splitStream(event{"type": "result", "text": text}); len(r) != 1 {
		t.Errorf("a result split in %d", len(r))
	}
}

// TestSandboxEnv: the sandbox's env vars, as envd serves them, are in a
// kernel's environment when it starts, and set in a running one when
// they change (a sandbox forked from a capture taken before its create).
func TestSandboxEnv(t *testing.T) {
	var mu sync.Mutex
	env := map[string]string{"ROOST_SB": "captured"}
	envd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(env)
	}))
	defer envd.Close()
	url := newTestServerWith(t, Config{SandboxEnv: envd.URL + "/envs"})
	ctx := t.Context()
	get := `import os; os.environ.get("ROOST_SB", "-") + " " + os.environ.get("ROOST_NEW", "-")`
	if got := value(executeOK(t, ctx, url, map[string]any{"code": get})); got != "captured -" {
		t.Errorf("at start: %q", got)
	}
	mu.Lock()
	env = map[string]string{"ROOST_SB": "created", "ROOST_NEW": "x y"}
	mu.Unlock()
	time.Sleep(envFresh) // the server asks envd again
	if got := value(executeOK(t, ctx, url, map[string]any{"code": get})); got != "created x y" {
		t.Errorf("after the sandbox's env changed: %q", got)
	}
	// A run's own env vars go back to the sandbox's after it.
	executeOK(t, ctx, url, map[string]any{"code": "1", "env_vars": map[string]string{"ROOST_NEW": "mine"}})
	if got := value(executeOK(t, ctx, url, map[string]any{"code": get})); got != "created x y" {
		t.Errorf("after a run with its own: %q", got)
	}
	if got := value(executeOK(t, ctx, url, map[string]any{"code": `echo "$ROOST_SB $ROOST_NEW"`, "language": "bash"})); got != "created x y" {
		t.Errorf("a kernel started after: %q", got)
	}
}

// executeOK is execute, failing on a status but 200.
func executeOK(t *testing.T, ctx context.Context, url string, body map[string]any) []event {
	t.Helper()
	ev, status := execute(t, ctx, url, body)
	if status != http.StatusOK {
		t.Fatalf("%v: %d", body, status)
	}
	return ev
}
