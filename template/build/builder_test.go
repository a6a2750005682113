package build

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

const testDockerfile = `FROM roost:mini AS deps
RUN mkdir -p /out && echo built > /out/app
FROM roost:mini
ARG WHO=builder
ENV GREETING=hello
WORKDIR /srv/app
COPY --chown=user:user --chmod=0640 app/ ./
COPY --from=deps /out/app /usr/local/bin/
ADD data.tar /data/
RUN echo "$GREETING from $WHO as $(id -u)" > hello && rm /etc/motd && rm -r /opt/d && mkdir /opt/d && echo new > /opt/d/new
USER user
RUN touch /home/user/mine
CMD ["sh", "-c", "echo hi"]
`

// putContext puts the build context of testDockerfile into blobs.
func putContext(t *testing.T, b *Builder, extra string) content.Digest {
	t.Helper()
	inner := tarOf(t, map[string]string{"x/": "", "x/y.txt": "inside\n"})
	ctx := tarOf(t, map[string]string{"app/": "", "app/a.txt": "a" + extra, "app/sub/": "", "app/sub/b.txt": "b", "data.tar": string(inner), "unused": "u"})
	d, err := b.Blobs.PutBytes(t.Context(), ctx)
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest
}

// logs collects a build's log.
type logs struct {
	mu      sync.Mutex
	entries []LogEntry
}

func (l *logs) add(e LogEntry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries = append(l.entries, e)
}

func (l *logs) steps() []string {
	var out []string
	for _, e := range l.entries {
		if len(out) == 0 || out[len(out)-1] != e.Step {
			out = append(out, e.Step)
		}
	}
	return out
}

func (l *logs) has(step, text string) bool {
	for _, e := range l.entries {
		if e.Step == step && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

func TestBuildDockerfile(t *testing.T) {
	b, env := newTestBuilder(t)
	spec, err := ParseDockerfile([]byte(testDockerfile), nil, putContext(t, b, ""))
	if err != nil {
		t.Fatal(err)
	}
	var l logs
	m, d, err := b.Build(t.Context(), spec, l.add)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"base", "1", "base", "2", "3", "4", "5", "6", "7", "8", "9", "finalize"}; !slices.Equal(l.steps(), want) {
		t.Errorf("log steps %v, want %v", l.steps(), want)
	}
	c := m.Config
	if c.User != "user" || c.Workdir != "/srv/app" || c.Env["GREETING"] != "hello" || c.Env["WHO"] != "" || c.StartCmd != "sh -c 'echo hi'" || c.Source != "dockerfile" {
		t.Errorf("config %+v", c)
	}
	tmpl, err := b.Templates.Get(template.TreeName(d))
	if err != nil {
		t.Fatalf("the build's tree: %v", err)
	}
	root := tmpl.RootFS
	wantFile(t, root, "srv/app/a.txt", "a", 0o640, 1000)
	wantFile(t, root, "srv/app/sub/b.txt", "b", 0o640, 1000)
	wantFile(t, root, "usr/local/bin/app", "built\n", 0o644, 0)
	wantFile(t, root, "data/x/y.txt", "inside\n", 0o644, 0)
	wantFile(t, root, "srv/app/hello", "hello from builder as 0\n", 0o644, 0)
	wantFile(t, root, "opt/d/new", "new\n", 0o644, 0)
	wantFile(t, root, "home/user/mine", "", 0o644, 1000)
	for _, gone := range []string{"etc/motd", "opt/d/old", "srv/app/app", "data/data.tar", "etc/hostname"} {
		if _, err := os.Lstat(filepath.Join(root, gone)); err == nil {
			t.Errorf("/%s is in the tree", gone)
		}
	}
	// The base's tree, which the working tree was a hard-link copy of,
	// is as it was.
	mini, err := b.Templates.Get("mini")
	if err != nil {
		t.Fatal(err)
	}
	wantFile(t, mini.RootFS, "etc/motd", "welcome\n", 0o644, 0)
	wantFile(t, mini.RootFS, "opt/d/old", "old\n", 0o644, 0)
	if env.runs != 3 {
		t.Errorf("%d RUNs ran, want 3", env.runs)
	}
	if entries, _ := os.ReadDir(filepath.Join(b.Dir, "work")); len(entries) != 0 {
		t.Errorf("work dirs left: %v", entries)
	}

	// Nothing changed: all cached, no tree unpacked, the same manifest.
	env.runs = 0
	var again logs
	start := time.Now()
	m2, d2, err := b.Build(t.Context(), spec, again.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cached rebuild of %d steps: %v", 9, time.Since(start))
	if d2 != d || len(m2.Layers) != len(m.Layers) || env.runs != 0 {
		t.Errorf("rebuild: %s (%d RUNs), want %s", d2, env.runs, d)
	}
	for i := 1; i <= 9; i++ {
		if !again.has(itoa(i), "CACHED") {
			t.Errorf("step %d not cached", i)
		}
	}

	// A changed file of the context: the steps that copy from it and every
	// step after them run again (the context is one blob: its digest is
	// in the key of every COPY from it).
	spec3, err := ParseDockerfile([]byte(testDockerfile), nil, putContext(t, b, "changed"))
	if err != nil {
		t.Fatal(err)
	}
	var third logs
	if _, d3, err := b.Build(t.Context(), spec3, third.add); err != nil || d3 == d {
		t.Fatalf("build with a changed file: %s, %v", d3, err)
	}
	if !third.has("3", "CACHED") || third.has("4", "CACHED") || third.has("9", "CACHED") || env.runs != 2 {
		t.Errorf("changed file: want steps 1-3 cached and 4-9 run; %d RUNs", env.runs)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func wantFile(t *testing.T, root, rel, body string, mode os.FileMode, uid int) {
	t.Helper()
	p := filepath.Join(root, rel)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("/%s: %v", rel, err)
		return
	}
	st, _ := os.Lstat(p)
	if string(data) != body || st.Mode().Perm() != mode || int(sysStat(st).Uid) != uid {
		t.Errorf("/%s: %q mode %v uid %d, want %q %v %d", rel, data, st.Mode().Perm(), sysStat(st).Uid, body, mode, uid)
	}
}

func TestBuildFailingRun(t *testing.T) {
	b, _ := newTestBuilder(t)
	src := "FROM roost:mini\nENV A=1\n\nRUN echo first && echo second >&2 && exit 3\n"
	spec, err := ParseDockerfile([]byte(src), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var l logs
	_, _, err = b.Build(t.Context(), spec, l.add)
	var se *StepError
	if !errors.As(err, &se) {
		t.Fatalf("err %v, want a *StepError", err)
	}
	if se.Step != "2" || se.Line != 4 || se.ExitCode != 3 || !strings.Contains(se.Message, "first\nsecond") {
		t.Errorf("step error %+v", se)
	}
	if want := "step 2 (line 4): RUN /bin/sh -c 'echo first && echo second >&2 && exit 3': exit code 3: first\nsecond"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if !l.has("2", "second") {
		t.Error("the output is not in the log")
	}
}

func TestBuildE2B(t *testing.T) {
	b, env := newTestBuilder(t)
	tarball, err := os.ReadFile("testdata/e2b-sdk-app.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	files, err := b.Blobs.PutBytes(t.Context(), tarball)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"fromTemplate":"mini","steps":[
		{"type":"COPY","args":["app/","/home/user/app","user","0755"],"filesHash":"h","force":false},
		{"type":"RUN","args":["echo $PWD $(id -u) > /home/user/where"],"force":false},
		{"type":"COPY","args":["app/a.txt","/home/user/copy.txt","",""],"filesHash":"h"},
		{"type":"WORKDIR","args":["/home/user/work"]},
		{"type":"USER","args":["user"]},
		{"type":"RUN","args":["echo $PWD $(id -u) > out","root"]}
	],"startCmd":"sh -c 'sleep 1'","readyCmd":"true"}`
	spec, err := FromE2B([]byte(body), func(string) (content.Digest, error) { return files.Digest, nil })
	if err != nil {
		t.Fatal(err)
	}
	m, d, err := b.Build(t.Context(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config.StartCmd != "sh -c 'sleep 1'" || m.Config.ReadyCmd != "true" || m.Config.User != "user" || m.Config.Source != "e2b" {
		t.Errorf("config %+v", m.Config)
	}
	tmpl, err := b.Templates.Get(template.TreeName(d))
	if err != nil {
		t.Fatal(err)
	}
	root := tmpl.RootFS
	wantFile(t, root, "home/user/app/a.txt", "hello\n", 0o755, 1000)
	// The base's user and workdir (user, /home/user) are the steps'.
	wantFile(t, root, "home/user/copy.txt", "hello\n", 0o644, 1000)
	wantFile(t, root, "home/user/where", "/home/user 1000\n", 0o644, 1000)
	wantFile(t, root, "home/user/work/out", "/home/user/work 0\n", 0o644, 0)
	if env.runs != 2 {
		t.Errorf("%d runs", env.runs)
	}
	if tmpl.StartCmd != m.Config.StartCmd {
		t.Errorf("template %+v", tmpl)
	}

	// A step forced: it and the ones after it run again.
	spec.Stages[0].Steps[1].Force = true
	env.runs = 0
	if _, _, err := b.Build(t.Context(), spec, nil); err != nil || env.runs != 2 {
		t.Errorf("forced rebuild: %d runs, %v", env.runs, err)
	}
}

func TestBuildStepErrors(t *testing.T) {
	b, _ := newTestBuilder(t)
	ctxBlob, err := b.Blobs.PutBytes(t.Context(), tarOf(t, map[string]string{"a": "a"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ src, want string }{
		{"FROM roost:mini\nCOPY missing /x\n", "step 1 (line 2): COPY missing /x: missing: no such file or directory in the build context"},
		{"FROM roost:mini\nUSER nobody\n", `step 1 (line 2): USER nobody: user "nobody": not in the tree's /etc/passwd`},
		{"FROM roost:mini\nCOPY --chown=ghost a /a\n", `user "ghost"`},
		{"FROM roost:nothere\n", `step base: FROM template nothere`},
	} {
		spec, err := ParseDockerfile([]byte(tc.src), nil, ctxBlob.Digest)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = b.Build(t.Context(), spec, nil)
		var se *StepError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.src, err, tc.want)
		}
	}
}

// BenchmarkCachedRebuild rebuilds a 10-step Dockerfile whose steps are
// all cached (issue 13: at most 2 s).
func BenchmarkCachedRebuild(bm *testing.B) {
	b, _ := newTestBuilder(bm)
	src := "FROM roost:mini\n"
	for i := range 10 {
		if i%2 == 0 {
			src += "RUN echo " + itoa(i) + " > /tmp/f" + itoa(i) + "\n"
		} else {
			src += "ENV K" + itoa(i) + "=v\n"
		}
	}
	spec, err := ParseDockerfile([]byte(src), nil, "")
	if err != nil {
		bm.Fatal(err)
	}
	if _, _, err := b.Build(bm.Context(), spec, nil); err != nil {
		bm.Fatal(err)
	}
	for bm.Loop() {
		if _, _, err := b.Build(bm.Context(), spec, nil); err != nil {
			bm.Fatal(err)
		}
	}
}
