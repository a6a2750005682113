package identity

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	u := User{Name: "user", Home: "/home/user"}
	for in, want := range map[string]string{
		"/etc/passwd":   "/etc/passwd",
		"notes.txt":     "/home/user/notes.txt",
		"a/../b":        "/home/user/b",
		"~":             "/home/user",
		"~/x/./y/":      "/home/user/x/y",
		"/a//b/../c/":   "/a/c",
		"../../../etc":  "/etc",
		"~other/secret": "/home/user/~other/secret",
	} {
		got, err := u.Resolve(in)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "a\x00b"} {
		if _, err := u.Resolve(bad); !errors.Is(err, ErrBadPath) {
			t.Errorf("Resolve(%q): %v, want ErrBadPath", bad, err)
		}
	}
}

func TestLookup(t *testing.T) {
	if _, err := Lookup("no-such-user-roost"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := Lookup(""); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("empty name: %v", err)
	}
	me, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	again, err := Lookup(me.Name)
	if err != nil || again.UID != me.UID || again.Home != me.Home {
		t.Fatalf("Lookup(%q) = %+v, %v", me.Name, again, err)
	}
	if me.Credential() != nil {
		t.Error("running as oneself needs no credential")
	}
}

func FuzzResolve(f *testing.F) {
	for _, s := range []string{"", "/", "~", "~/a", "a/../../b", "\x00", "//..//.", "~/../.."} {
		f.Add(s, "/home/user")
	}
	f.Add("0", "/\x00")
	f.Add("x", "relative")
	f.Fuzz(func(t *testing.T, p string, home string) {
		got, err := User{Home: home}.Resolve(p)
		if err != nil {
			return
		}
		if !filepath.IsAbs(got) || filepath.Clean(got) != got || strings.IndexByte(got, 0) >= 0 {
			t.Fatalf("Resolve(%q) = %q: not a clean absolute path", p, got)
		}
	})
}
