package namespace_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/runtime/runtimetest"
	"roost.dev/roost/template/templatetest"
)

// TestAttackTemplateSymlinksOutOfRoot: a template (users bring their own)
// whose /proc, /dev, /sys, /tmp, /var/tmp, /etc or /etc/hostname is an
// absolute symlink to a host path. Everything the driver and the
// sandbox's init do to that path, as host root or before the pivot, must
// stay inside the sandbox: the host's target keeps its mode, content and
// mounts. The sandbox either starts and works, or is refused with an error.
func TestAttackTemplateSymlinksOutOfRoot(t *testing.T) {
	d := newDriver(t)
	nw := runtimetest.Network(t)
	base := templatetest.Base(t).RootFS
	for _, link := range []string{"proc", "dev", "sys", "tmp", "var/tmp", "etc/hostname", "etc/hosts"} {
		t.Run(strings.ReplaceAll(link, "/", "-"), func(t *testing.T) {
			victim := t.TempDir()
			target := filepath.Join(victim, "target")
			isFile := strings.HasPrefix(link, "etc/")
			if isFile {
				if err := os.WriteFile(target, []byte("host-original\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}

			// The hostile tree: hard links of the base template (cheap,
			// same filesystem), with the path replaced by a symlink.
			tree := filepath.Join(templatetest.CacheDir(), "attack-"+runtimetest.ID())
			t.Cleanup(func() { os.RemoveAll(tree) })
			if out, err := exec.Command("cp", "-al", base, tree).CombinedOutput(); err != nil {
				t.Fatalf("cp -al: %v: %s", err, out)
			}
			p := filepath.Join(tree, link)
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}

			sb, err := runtimetest.TryStart(t, d, nw, runtimetest.Options{RootFS: tree})
			if err != nil {
				t.Logf("refused: %v", err)
			} else {
				if out := sb.MustExec(t, "echo alive"); !strings.Contains(out, "alive") {
					t.Errorf("the sandbox does not work: %q", out)
				}
				sb.MustExec(t, "echo x > /"+link+"/probe 2>/dev/null; echo y > /"+link+" 2>/dev/null; true")
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				if err := sb.Close(ctx); err != nil {
					t.Errorf("close: %v", err)
				}
			}

			// The host's target is as it was.
			st, err := os.Stat(target)
			if err != nil || st.Mode().Perm() != map[bool]os.FileMode{true: 0o644, false: 0o755}[isFile] || st.Mode()&os.ModeSticky != 0 {
				t.Errorf("the host's target changed mode: %v %v", st.Mode(), err)
			}
			if isFile {
				if b, _ := os.ReadFile(target); string(b) != "host-original\n" {
					t.Errorf("the host's file changed: %q", b)
				}
			} else if ents, _ := os.ReadDir(target); len(ents) != 0 {
				t.Errorf("the host's directory got %d entries", len(ents))
			}
			mi, err := os.ReadFile("/proc/self/mountinfo")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(mi), victim) {
				t.Errorf("a mount landed on the host under %s", victim)
			}
		})
	}
}
