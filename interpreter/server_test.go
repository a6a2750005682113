package interpreter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// newTestServer serves a Server whose Python kernels are Debian's
// ipykernel (skipped where it is missing).
func newTestServer(t *testing.T) string {
	t.Helper()
	return newTestServerWith(t, Config{})
}

// newTestServerWith is newTestServer with cfg (its Cwd a test directory).
func newTestServerWith(t *testing.T, cfg Config) string {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import ipykernel, matplotlib, pandas").Run(); err != nil {
		t.Skip("no /usr/bin/python3 with ipykernel, matplotlib and pandas (scripts/deps.sh installs them)")
	}
	cfg.Cwd = t.TempDir()
	s, err := New(cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(func() { ts.Close(); s.Close() })
	// Not ready until its default kernel answers: a template's ready
	// check waits for that.
	if resp, err := http.Get(ts.URL + "/health"); err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("health before the kernel started: %v %v", resp, err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(ts.URL + "/health"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("health once started: %v %v", resp, err)
	}
	return ts.URL
}

// execute posts body to /execute and returns the answer's lines.
func execute(t *testing.T, ctx context.Context, url string, body map[string]any) ([]event, int) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/execute", bytes.NewReader(b))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode
	}
	var out []event
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		for _, c := range line {
			if c >= 0x80 {
				t.Fatalf("a non-ASCII byte in line %q", line)
			}
		}
		var e event
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	return out, resp.StatusCode
}

// of picks the lines of type typ.
func of(events []event, typ string) []event {
	var out []event
	for _, e := range events {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

func mainText(t *testing.T, events []event) string {
	t.Helper()
	for _, e := range of(events, "result") {
		if e["is_main_result"] == true {
			s, _ := e["text"].(string)
			return s
		}
	}
	t.Fatalf("no main result in %v", events)
	return ""
}

func TestExecute(t *testing.T) {
	url := newTestServer(t)
	ctx := t.Context()
	execute(t, ctx, url, map[string]any{"code": "x = 1"})
	ev, code := execute(t, ctx, url, map[string]any{"code": "x + 1"})
	if code != http.StatusOK || mainText(t, ev) != "2" {
		t.Fatalf("x + 1: %d %v", code, ev)
	}
	if n := of(ev, "number_of_executions"); len(n) != 1 || n[0]["execution_count"] != float64(2) {
		t.Errorf("execution count %v, want 2", n)
	}
	if ev[len(ev)-1]["type"] != "end_of_execution" {
		t.Errorf("last line %v", ev[len(ev)-1])
	}

	ev, _ = execute(t, ctx, url, map[string]any{"code": "import sys\nprint('out é🎉')\nprint('err', file=sys.stderr)\n'quoted'"})
	if o := of(ev, "stdout"); len(o) != 1 || o[0]["text"] != "out é🎉\n" {
		t.Errorf("stdout %v", o)
	}
	if e := of(ev, "stderr"); len(e) != 1 || e[0]["text"] != "err\n" {
		t.Errorf("stderr %v", e)
	}
	if got := mainText(t, ev); got != "quoted" {
		t.Errorf("a string's text %q, want it without quotes", got)
	}

	ev, _ = execute(t, ctx, url, map[string]any{"code": "1/0"})
	if e := of(ev, "error"); len(e) != 1 || e[0]["name"] != "ZeroDivisionError" || !strings.Contains(e[0]["traceback"].(string), "1/0") {
		t.Errorf("error %v", e)
	}

	ev, _ = execute(t, ctx, url, map[string]any{"code": "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], label='up')\nplt.title('t')\nplt.show()"})
	if r := of(ev, "result"); len(r) != 1 || r[0]["png"] == nil || r[0]["is_main_result"] != false {
		t.Errorf("a plot: %v", r)
	} else if c, _ := r[0]["chart"].(map[string]any); c["type"] != "line" || c["title"] != "t" ||
		fmt.Sprint(c["elements"]) != "[map[label:up points:[[0 1] [1 2] [2 3]]]]" {
		t.Errorf("a plot's chart: %v", r[0]["chart"])
	}
	// Each kind of chart E2B gives, and several axes as a superchart.
	for code, want := range map[string]string{
		"plt.bar(['a', 'b'], [3, 5])":                                "bar [map[group: label:a value:3] map[group: label:b value:5]]",
		"plt.pie([1, 3], labels=['x', 'y'])":                         "pie [map[angle:90 label:x radius:1] map[angle:270 label:y radius:1]]",
		"plt.scatter([1], [2])":                                      "scatter [map[label: points:[[1 2]]]]",
		"plt.boxplot([[1, 2, 3, 4, 5, 20]], labels=['A'])":           "box_and_whisker [map[first_quartile:2.25 label:A max:5 median:3.5 min:1 outliers:[20] third_quartile:4.75]]",
		"fig, (a, b) = plt.subplots(1, 2)\na.plot([1]); b.plot([2])": "superchart [line line]",
	} {
		ev, _ = execute(t, ctx, url, map[string]any{"code": code + "\nplt.show()"})
		r := of(ev, "result")
		if len(r) != 1 {
			t.Errorf("%s: %v", code, ev)
			continue
		}
		c, _ := r[0]["chart"].(map[string]any)
		elements, _ := c["elements"].([]any)
		if c["type"] == "superchart" {
			for i, e := range elements {
				elements[i] = e.(map[string]any)["type"]
			}
		}
		if pie, _ := c["type"].(string); pie == "pie" {
			for _, e := range elements {
				e.(map[string]any)["angle"] = math.Round(e.(map[string]any)["angle"].(float64))
			}
		}
		if got := fmt.Sprint(c["type"], " ", elements); got != want {
			t.Errorf("%s: chart %s, want %s", code, got, want)
		}
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': [0.5, float('nan')]})"})
	if r := of(ev, "result"); len(r) != 1 || !strings.Contains(r[0]["html"].(string), "<table") ||
		fmt.Sprint(r[0]["data"]) != "map[a:[1 2] b:[0.5 <nil>]]" {
		t.Errorf("a data frame: %v", r)
	}

	// Env vars for one run only.
	ev, _ = execute(t, ctx, url, map[string]any{"code": "import os\nos.environ.get('ROOST_ONE_RUN')", "env_vars": map[string]string{"ROOST_ONE_RUN": "yes"}})
	if got := mainText(t, ev); got != "yes" {
		t.Errorf("env var in its run: %q", got)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "str(os.environ.get('ROOST_ONE_RUN'))"})
	if got := mainText(t, ev); got != "None" {
		t.Errorf("env var after its run: %q", got)
	}
}

// TestPythonKernel: a Python kernel is IPython's shell over pipes
// (python.py): started as `python3 -m` would (the context's cwd first on
// sys.path, so its modules import), the shell a Jupyter kernel has, its
// output ahead of its result, displays beside the main result, the
// server's own runs not counted, and exit() restarting it.
func TestPythonKernel(t *testing.T) {
	url := newTestServer(t)
	ctx := t.Context()
	ev, _ := execute(t, ctx, url, map[string]any{"code": "import os, sys\nsys.path[0] == os.getcwd()"})
	if got := mainText(t, ev); got != "True" {
		t.Errorf("sys.path[0] is the cwd: %s (%v)", got, ev)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "open('roost_mod.py', 'w').write('X = 42\\n')\nimport roost_mod\nroost_mod.X"})
	if got := mainText(t, ev); got != "42" {
		t.Errorf("a module in the cwd: %s (%v)", got, ev)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "from ipykernel.zmqshell import ZMQInteractiveShell\nisinstance(get_ipython(), ZMQInteractiveShell)"})
	if got := mainText(t, ev); got != "True" {
		t.Errorf("the shell is a Jupyter kernel's: %s (%v)", got, ev)
	}
	// Output flushed by hand and not, a line an event, before the result.
	ev, _ = execute(t, ctx, url, map[string]any{"code": "print('x', end='')\nsys.stdout.flush()\nsys.stdout.flush()\nprint('y')\nprint('z', file=sys.stderr)\n40 + 2"})
	var out strings.Builder
	for i, e := range ev {
		switch e["type"] {
		case "stdout":
			out.WriteString(e["text"].(string))
		case "result":
			if stderr := of(ev[:i], "stderr"); out.String() != "xy\n" || len(stderr) != 1 || stderr[0]["text"] != "z\n" {
				t.Errorf("the result came before its output: %v", ev)
			}
		}
	}
	if got := mainText(t, ev); got != "42" || out.String() != "xy\n" {
		t.Errorf("output and result: %q %q (%v)", out.String(), got, ev)
	}
	// IPython's history, in memory; the run with env vars counts once.
	execute(t, ctx, url, map[string]any{"code": "1", "env_vars": map[string]string{"ROOST_X": "1"}})
	ev, _ = execute(t, ctx, url, map[string]any{"code": "(_, Out[max(Out)], In[-3].splitlines()[-1], len(In) - 1 == get_ipython().execution_count)"})
	if got := mainText(t, ev); got != "(1, 1, '40 + 2', True)" {
		t.Errorf("_, Out, In and the count: %s (%v)", got, ev)
	}
	if n := of(ev, "number_of_executions"); len(n) != 1 || n[0]["execution_count"] != float64(6) {
		t.Errorf("execution count %v, want 6", n)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "from IPython.display import display\ndisplay('shown')\n'last'"})
	if rs := of(ev, "result"); len(rs) != 2 || rs[0]["text"] != "shown" || rs[0]["is_main_result"] != false || mainText(t, ev) != "last" {
		t.Errorf("a display and the main result: %v", ev)
	}
	// Data as Jupyter sends it: an image's bytes in base64, NaN as null.
	ev, _ = execute(t, ctx, url, map[string]any{"code": "from PIL import Image\nfrom IPython.display import JSON\ndisplay(JSON({'n': float('nan')}))\nImage.new('RGB', (2, 2))"})
	if rs := of(ev, "result"); len(rs) != 2 || !reflect.DeepEqual(rs[0]["json"], map[string]any{"n": nil}) || !strings.HasPrefix(fmt.Sprint(rs[1]["png"]), "iVBORw0KGgo") {
		t.Errorf("JSON with NaN, and an image: %v", ev)
	}
	// exit() restarts the kernel once its run is done, in the context's cwd.
	execute(t, ctx, url, map[string]any{"code": "kept = 1\nos.chdir('/')\nexit()"})
	ev, _ = execute(t, ctx, url, map[string]any{"code": "import os, sys\n('kept' in dir(), os.getcwd() == sys.path[0] != '/')"})
	if got := mainText(t, ev); got != "(False, True)" {
		t.Errorf("after exit(): %s (%v)", got, ev)
	}
}

func TestContexts(t *testing.T) {
	url := newTestServer(t)
	ctx := t.Context()
	dir := t.TempDir()
	var c contextJSON
	post(t, url+"/contexts", map[string]any{"cwd": dir}, http.StatusOK, &c)
	if c.ID == "" || c.Language != "python" || c.Cwd != dir {
		t.Fatalf("context %+v", c)
	}
	execute(t, ctx, url, map[string]any{"code": "y = 'mine'", "context_id": c.ID})
	ev, _ := execute(t, ctx, url, map[string]any{"code": "import os\nos.getcwd() + ' ' + y", "context_id": c.ID})
	if got := mainText(t, ev); got != dir+" mine" {
		t.Errorf("in the context: %q", got)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "'y' in dir()"})
	if got := mainText(t, ev); got != "False" {
		t.Errorf("the default context sees the other's variable: %q", got)
	}
	var list []contextJSON
	get(t, url+"/contexts", &list)
	if len(list) != 2 || list[1].ID != c.ID {
		t.Errorf("contexts %+v, want the default one then the new one", list)
	}

	post(t, url+"/contexts/"+c.ID+"/restart", nil, http.StatusOK, nil)
	ev, _ = execute(t, ctx, url, map[string]any{"code": "'y' in dir()", "context_id": c.ID})
	if got := mainText(t, ev); got != "False" {
		t.Errorf("after a restart the variable is %q", got)
	}

	// A run that never ends, its client gone: interrupted, the context
	// serves the next run with its state.
	execute(t, ctx, url, map[string]any{"code": "z = 7", "context_id": c.ID})
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	b, _ := json.Marshal(map[string]any{"code": "while True: pass", "context_id": c.ID})
	req, _ := http.NewRequestWithContext(short, http.MethodPost, url+"/execute", bytes.NewReader(b))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "z", "context_id": c.ID})
	if got := mainText(t, ev); got != "7" {
		t.Errorf("after an interrupted run: %q", got)
	}

	// A kernel that dies: the run says so, the next one gets a new kernel.
	ev, _ = execute(t, ctx, url, map[string]any{"code": "import os\nos._exit(3)", "context_id": c.ID})
	if e := of(ev, "error"); len(e) != 1 || e[0]["name"] != "KernelDied" {
		t.Errorf("a kernel that died: %v", ev)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "1 + 1", "context_id": c.ID})
	if got := mainText(t, ev); got != "2" {
		t.Errorf("after the kernel died: %q", got)
	}

	req2, _ := http.NewRequest(http.MethodDelete, url+"/contexts/"+c.ID, nil)
	if resp, err := http.DefaultClient.Do(req2); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("delete: %v %v", resp, err)
	}
	if _, code := execute(t, ctx, url, map[string]any{"code": "1", "context_id": c.ID}); code != http.StatusNotFound {
		t.Errorf("run in a deleted context: %d", code)
	}
}

func TestBadInput(t *testing.T) {
	url := newTestServer(t)
	ctx := t.Context()
	for _, tc := range []struct {
		body map[string]any
		code int
	}{
		{map[string]any{"code": "1", "language": "cobol"}, http.StatusBadRequest},
		{map[string]any{"code": "1", "context_id": "nope"}, http.StatusNotFound},
		{map[string]any{"code": "1", "context_id": "nope", "language": "python"}, http.StatusBadRequest},
		{map[string]any{"language": "python"}, http.StatusBadRequest},
	} {
		if _, code := execute(t, ctx, url, tc.body); code != tc.code {
			t.Errorf("%v: %d, want %d", tc.body, code, tc.code)
		}
	}
	post(t, url+"/contexts", map[string]any{"language": "cobol"}, http.StatusBadRequest, nil)
	post(t, url+"/contexts", map[string]any{"cwd": "/no/such/dir"}, http.StatusBadRequest, nil)
	post(t, url+"/contexts/nope/restart", nil, http.StatusNotFound, nil)

	// 100 MB of output streams through, and the context serves on.
	ev, _ := execute(t, ctx, url, map[string]any{"code": "import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))\n"})
	n := 0
	for _, e := range of(ev, "stdout") {
		n += len(e["text"].(string))
	}
	if n != 100<<20 {
		t.Errorf("%d bytes of stdout, want 100 MiB", n)
	}
	if ev, _ := execute(t, ctx, url, map[string]any{"code": "2 * 21"}); mainText(t, ev) != "42" {
		t.Error("after 100 MB of output the context does not answer")
	}
}

// contextJSON is a context as the routes answer it.
type contextJSON struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

func post(t *testing.T, url string, body any, want int, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	resp, err := http.Post(url, "application/json", r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("POST %s: %d %s, want %d", url, resp.StatusCode, b, want)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("POST %s: %s: %v", url, b, err)
		}
	}
}

func get(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
}

// TestR runs R contexts (IRkernel), where R is installed. IRkernel shows
// a value as display data, not as an execution's result: its results are
// not main ones (as with E2B's server).
func TestR(t *testing.T) {
	if err := exec.Command("/usr/bin/R", "--slave", "-e", "library(IRkernel)").Run(); err != nil {
		t.Skip("no R with IRkernel (Debian's r-cran-irkernel)")
	}
	url := newTestServer(t)
	ctx := t.Context()
	var c contextJSON
	post(t, url+"/contexts", map[string]any{"language": "R"}, http.StatusOK, &c)
	if c.Language != "r" {
		t.Fatalf("context %+v", c)
	}
	execute(t, ctx, url, map[string]any{"code": "x <- 20", "context_id": c.ID})
	ev, _ := execute(t, ctx, url, map[string]any{"code": "x + 22", "context_id": c.ID})
	if got := lastText(t, ev); got != "[1] 42" {
		t.Errorf("x + 22: %q", got)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "cat('hi\\n'); Sys.getenv('ROOST_R')", "context_id": c.ID, "env_vars": map[string]string{"ROOST_R": "set \"quoted\""}})
	if o := of(ev, "stdout"); len(o) != 1 || o[0]["text"] != "hi\n" || lastText(t, ev) != `[1] "set \"quoted\""` {
		t.Errorf("stdout and env var: %v", ev)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "Sys.getenv('ROOST_R', unset = 'none')", "context_id": c.ID})
	if got := lastText(t, ev); got != `[1] "none"` {
		t.Errorf("env var after its run: %q", got)
	}
	ev, _ = execute(t, ctx, url, map[string]any{"code": "stop('boom')", "context_id": c.ID})
	if e := of(ev, "error"); len(e) != 1 || !strings.Contains(fmt.Sprint(e[0]), "boom") {
		t.Errorf("an R error: %v", ev)
	}
	// By its language, the default R context.
	ev, _ = execute(t, ctx, url, map[string]any{"code": "1:3", "language": "r"})
	if got := lastText(t, ev); got != "[1] 1 2 3" {
		t.Errorf("1:3 in the default R context: %q", got)
	}
}

// lastText is the text of the last result.
func lastText(t *testing.T, events []event) string {
	t.Helper()
	r := of(events, "result")
	if len(r) == 0 {
		t.Fatalf("no result in %v", events)
	}
	s, _ := r[len(r)-1]["text"].(string)
	return s
}
