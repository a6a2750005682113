package cgroup

import (
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/mountinfo"
)

const hybridMountinfo = `24 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 24 0:26 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
33 31 0:28 / /sys/fs/cgroup/cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpuacct
34 31 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
35 31 0:30 / /sys/fs/cgroup/freezer rw,relatime shared:13 - cgroup cgroup rw,freezer
36 31 0:31 / /sys/fs/cgroup/pids rw,relatime shared:14 - cgroup cgroup rw,pids
37 31 0:32 / /sys/fs/cgroup/systemd rw,relatime shared:15 - cgroup cgroup rw,xattr,name=systemd
38 31 0:33 / /sys/fs/cgroup/unified rw,relatime shared:16 - cgroup2 cgroup2 rw
`

func TestV1Mounts(t *testing.T) {
	tests := []struct {
		name      string
		mountinfo string
		root      string
		want      map[string]string
	}{
		{"hybrid", hybridMountinfo, "/sys/fs/cgroup", map[string]string{
			"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct", "memory": "/sys/fs/cgroup/memory",
			"freezer": "/sys/fs/cgroup/freezer", "pids": "/sys/fs/cgroup/pids",
		}},
		{"comounted", `40 31 0:40 / /sys/fs/cgroup/cpu,cpuacct rw shared:1 - cgroup cgroup rw,cpu,cpuacct
41 31 0:41 / /sys/fs/cgroup/memory rw shared:2 - cgroup cgroup rw,memory
`, "/sys/fs/cgroup", map[string]string{"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory"}},
		{"first mount wins", `40 31 0:40 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
41 31 0:40 / /sys/fs/cgroup/memory2 rw - cgroup cgroup rw,memory
`, "/sys/fs/cgroup", map[string]string{"memory": "/sys/fs/cgroup/memory"}},
		{"escaped mount point", `40 31 0:40 / /mnt/my\040cgroups/memory rw - cgroup cgroup rw,memory
`, "/mnt/my cgroups", map[string]string{"memory": "/mnt/my cgroups/memory"}},
		{"outside root", hybridMountinfo, "/elsewhere", nil},
		{"root prefix is not a parent", hybridMountinfo, "/sys/fs/cg", nil},
		{"pure v2", `30 24 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw,nsdelegate
`, "/sys/fs/cgroup", nil},
		{"optional fields", `34 31 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 master:3 propagate_from:2 - cgroup cgroup rw,memory
`, "/sys/fs/cgroup", map[string]string{"memory": "/sys/fs/cgroup/memory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts, err := mountinfo.Parse(strings.NewReader(tt.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			if got := v1Mounts(mounts, tt.root); !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseKeyed(t *testing.T) {
	tests := []struct {
		name, in string
		want     map[string]uint64
		bad      bool
	}{
		{"v1 oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", map[string]uint64{"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}, false},
		{"v2 memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n", map[string]uint64{"low": 0, "high": 0, "max": 12, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}, false},
		{"cpu.stat", "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\n", map[string]uint64{"usage_usec": 123456, "user_usec": 100000, "system_usec": 23456}, false},
		{"cgroup.events", "populated 1\nfrozen 0\n", map[string]uint64{"populated": 1, "frozen": 0}, false},
		{"empty", "", map[string]uint64{}, false},
		{"three fields", "a 1 2\n", nil, true},
		{"not a number", "a b\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKeyed("test", tt.in)
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v, want error %v", err, tt.bad)
			}
			if !tt.bad && !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseUint(t *testing.T) {
	for in, want := range map[string]uint64{"0\n": 0, "67108864\n": 67108864, "max\n": 0, "9223372036854771712": 9223372036854771712} {
		if got, err := parseUint("test", in); err != nil || got != want {
			t.Errorf("parseUint(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseUint("test", "-1"); err == nil {
		t.Error("parseUint(-1) succeeded")
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"roost", true},
		{"roost/abc-123_x.y", true},
		{"roost-test-1/a/b", true},
		{"", false},
		{"system.slice", false},
		{"/roost/a", false},
		{"roost/", false},
		{"roost//a", false},
		{"roost/../system.slice", false},
		{"roost/./a", false},
		{"roost/a b", false},
		{"roost/a\nb", false},
		{"roost/ä", false},
		{"roost/" + strings.Repeat("a", 600), false},
	}
	for _, tt := range tests {
		err := validName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("validName(%q) = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("validName(%q) = %v, not ErrInvalid", tt.name, err)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name string
		l    Limits
		ok   bool
	}{
		{"none", Limits{}, true},
		{"all", Limits{CPUs: 1.5, MemoryBytes: 64 << 20, Pids: 100}, true},
		{"smallest cpu", Limits{CPUs: 0.01}, true},
		{"cpu too small", Limits{CPUs: 0.001}, false},
		{"cpu negative", Limits{CPUs: -1}, false},
		{"cpu NaN", Limits{CPUs: math.NaN()}, false},
		{"cpu Inf", Limits{CPUs: math.Inf(1)}, false},
		{"cpu absurd", Limits{CPUs: 1e12}, false},
		{"memory negative", Limits{MemoryBytes: -1}, false},
		{"pids negative", Limits{Pids: -1}, false},
		{"pids absurd", Limits{Pids: 1 << 40}, false},
	}
	for _, tt := range tests {
		err := tt.l.validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: validate() = %v, not ErrInvalid", tt.name, err)
		}
	}
}

func TestCPUQuota(t *testing.T) {
	for cpus, want := range map[float64]int64{0.01: 1000, 0.2: 20000, 1: 100000, 1.5: 150000, 2.333333: 233333} {
		if got := cpuQuota(cpus); got != want {
			t.Errorf("cpuQuota(%v) = %d, want %d", cpus, got, want)
		}
	}
}

func TestGroupLayout(t *testing.T) {
	h := &Hierarchy{version: 1, v1: map[string]string{
		"memory": "/c/memory", "cpu": "/c/cpu,cpuacct", "cpuacct": "/c/cpu,cpuacct", "pids": "/c/pids", "freezer": "/c/freezer",
	}, v2: "/c/unified"}
	g := h.group("roost/x")
	want := []string{"/c/memory/roost/x", "/c/cpu,cpuacct/roost/x", "/c/pids/roost/x", "/c/freezer/roost/x", "/c/unified/roost/x"}
	if !reflect.DeepEqual(g.dirs, want) {
		t.Errorf("dirs = %v, want %v", g.dirs, want)
	}
	if d, v2 := g.freezer(); d != "/c/freezer/roost/x" || v2 {
		t.Errorf("freezer = %s %v, want the v1 freezer (the v2 mirror has no cgroup.freeze)", d, v2)
	}
	// A hybrid host whose v2 mirror can freeze: that one.
	mirror := t.TempDir()
	if err := os.MkdirAll(filepath.Join(mirror, "roost/x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mirror, "roost/x/cgroup.freeze"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hm := &Hierarchy{version: 1, v1: map[string]string{"freezer": "/c/freezer"}, v2: mirror}
	if d, v2 := hm.group("roost/x").freezer(); d != filepath.Join(mirror, "roost/x") || !v2 {
		t.Errorf("hybrid freezer = %s %v, want the v2 mirror's", d, v2)
	}
	h2 := &Hierarchy{version: 2, v2: "/c"}
	g2 := h2.group("roost/x")
	if !reflect.DeepEqual(g2.dirs, []string{"/c/roost/x"}) {
		t.Errorf("v2 dirs = %v", g2.dirs)
	}
	if d, v2 := g2.freezer(); d != "/c/roost/x" || !v2 {
		t.Errorf("v2 freezer = %s %v", d, v2)
	}
}

func TestV1Groups(t *testing.T) {
	file := t.TempDir() + "/cgroup"
	const text = "12:pids:/roost/a\n4:cpu,cpuacct:/system.slice/x.service\n1:name=systemd:/init.scope\n0::/user.slice\n"
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := V1Groups(file)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"pids": "/roost/a", "cpu": "/system.slice/x.service", "cpuacct": "/system.slice/x.service", "name=systemd": "/init.scope"}
	if !maps.Equal(got, want) {
		t.Errorf("V1Groups = %v, want %v", got, want)
	}
	if _, err := V1Groups(t.TempDir() + "/missing"); err == nil {
		t.Error("a missing file read without error")
	}
}
