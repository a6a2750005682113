package mountinfo

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
35 24 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:16 - cgroup cgroup rw,memory
90 1 0:50 / /var/lib/roost/sandboxes/a\040b/rootfs rw - overlay roost-ab rw,lowerdir=/x
`
	ms, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 3 {
		t.Fatalf("%d mounts", len(ms))
	}
	if m := ms[1]; m.Target != "/sys/fs/cgroup/memory" || m.FSType != "cgroup" || strings.Join(m.SuperOptions, ",") != "rw,memory" {
		t.Errorf("cgroup mount %+v", m)
	}
	if m := ms[2]; m.Target != "/var/lib/roost/sandboxes/a b/rootfs" || m.Source != "roost-ab" || m.FSType != "overlay" {
		t.Errorf("overlay mount %+v", m)
	}
	for _, bad := range []string{"no separator here", "1 2 3 - proc"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		}
	}
}

func TestRead(t *testing.T) {
	ms, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Target == "/" {
			return
		}
	}
	t.Fatal("no root mount")
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/with\040space`:     "/mnt/with space",
		`/end\040`:               "/end ",
		`/a\134b`:                `/a\b`,
		`/trailing\04`:           `/trailing\04`,
		`/tab\011and\012newline`: "/tab\tand\nnewline",
		`/not\999octal`:          `/not\999octal`,
		`plain`:                  "plain",
	} {
		if got := unescape(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("22 1 0:21 / /proc rw - proc proc rw\n")
	f.Fuzz(func(t *testing.T, s string) { _, _ = Parse(strings.NewReader(s)) })
}
