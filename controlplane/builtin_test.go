package controlplane

import (
	"archive/tar"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"roost.dev/roost/store"
	"roost.dev/roost/store/storetest"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/content"
)

// TestBuiltinRebuiltOnUpgrade: the first create of code-interpreter-v1
// builds it with the roost-interpreter beside the control plane; once
// that binary changes (roost upgraded), creates go on with the build they
// have while one rebuild runs, and take the new build once it is ready; a
// rebuild that failed is not tried again at every create.
func TestBuiltinRebuiltOnUpgrade(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "roost-interpreter")
	writeInterpreter(t, bin, "interpreter v1")
	e := newTmplEnvWith(t, storetest.SQLiteURL(t), Config{Interpreter: bin})
	create := func() string {
		t.Helper()
		e.want(http.StatusCreated, "POST", "/sandboxes", map[string]any{"templateID": InterpreterTemplate}, nil)
		return e.agent.lastCreate().GetTemplateRef().GetDigest()
	}
	specs := func() []build.Spec {
		e.agent.mu.Lock()
		defer e.agent.mu.Unlock()
		return append([]build.Spec(nil), e.agent.specs...)
	}

	first := create()
	if got := e.copiedInterpreter(specs()[0]); got != "interpreter v1" || first == "" {
		t.Fatalf("first build copied %q; create got %q", got, first)
	}
	if again := create(); again != first || len(specs()) != 1 {
		t.Fatalf("an unchanged binary: create got %s (want %s), %d builds", again, first, len(specs()))
	}

	// Upgraded: the create is not held up by the rebuild, nor is a second
	// rebuild started while it runs.
	e.agent.mu.Lock()
	e.agent.hold = make(chan struct{})
	e.agent.mu.Unlock()
	writeInterpreter(t, bin, "interpreter v2, longer")
	for range 2 {
		if got := create(); got != first {
			t.Fatalf("create during the rebuild got %s, want the current build %s", got, first)
		}
	}
	waitFor(t, "the rebuild to start", func() bool { return len(specs()) == 2 })
	if got := e.copiedInterpreter(specs()[1]); got != "interpreter v2, longer" {
		t.Fatalf("the rebuild copied %q", got)
	}
	close(e.agent.hold)
	var second string
	waitFor(t, "creates to take the rebuild", func() bool { second = create(); return second != first })
	if n := len(specs()); n != 2 {
		t.Fatalf("%d builds, want 2", n)
	}
	// A create that resolved the old build just before the rebuild took
	// the tag starts no third build.
	e.srv.refreshBuiltin(context.Background(), e.builtinRef(first))
	if n := len(e.builtinBuilds()); n != 2 {
		t.Fatalf("a create that resolved the old build started a rebuild: %d builds, want 2", n)
	}

	// A rebuild that fails leaves the creates on the build they have, and
	// is not started again by the next create.
	e.agent.mu.Lock()
	e.agent.failWith = "step 1: exit code 100"
	e.agent.mu.Unlock()
	writeInterpreter(t, bin, "interpreter v3, longer still")
	if got := create(); got != second {
		t.Fatalf("create got %s, want %s", got, second)
	}
	waitFor(t, "the rebuild to fail", func() bool {
		builds := e.builtinBuilds()
		return len(builds) == 3 && builds[0].Status == store.BuildError
	})
	if got := create(); got != second || len(specs()) != 3 {
		t.Fatalf("after a failed rebuild: create got %s (want %s), %d builds (want 3)", got, second, len(specs()))
	}
}

// builtinBuilds are the built-in template's builds, newest first.
func (e *tmplEnv) builtinBuilds() []store.TemplateBuild {
	e.t.Helper()
	builds, err := e.st.ListBuilds(context.Background(), e.builtinTemplate().ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return builds
}

func (e *tmplEnv) builtinTemplate() store.Template {
	e.t.Helper()
	tmpl, err := e.st.GetTemplate(context.Background(), InterpreterTemplate)
	if err != nil {
		e.t.Fatal(err)
	}
	return tmpl
}

// builtinRef is the built-in template's build whose manifest is digest,
// as a create that resolved it holds it.
func (e *tmplEnv) builtinRef(digest string) contentRef {
	e.t.Helper()
	for _, b := range e.builtinBuilds() {
		if b.Manifest == digest {
			return contentRef{Template: e.builtinTemplate(), Build: b, Digest: content.Digest(b.Manifest)}
		}
	}
	e.t.Fatalf("no build of manifest %s", digest)
	return contentRef{}
}

// writeInterpreter replaces the file at path with one holding text.
func writeInterpreter(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// copiedInterpreter is the content of roost-interpreter spec copies into
// the template, read from the tar in the content store.
func (e *tmplEnv) copiedInterpreter(spec build.Spec) string {
	e.t.Helper()
	f, err := e.blobs.Open(spec.Stages[0].Steps[1].Files)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	if h, err := tr.Next(); err != nil || h.Name != "roost-interpreter" || h.Mode != 0o755 {
		e.t.Fatalf("the tar's entry %+v, %v", h, err)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
