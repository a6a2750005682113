package metrics

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func TestSampleReal(t *testing.T) {
	r, err := NewSampler("/proc", "/sys/fs/cgroup", "/").Sample()
	if err != nil {
		t.Fatal(err)
	}
	if r.CPUCount < 1 || r.MemTotal == 0 || r.MemUsed == 0 || r.MemUsed > r.MemTotal ||
		r.DiskTotal == 0 || r.DiskUsed > r.DiskTotal || r.CPUUsedPct < 0 || r.CPUUsedPct > 100 || r.Timestamp == 0 {
		t.Fatalf("implausible report %+v", r)
	}
}

func TestSampleFixture(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("meminfo", "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\nBuffers:          10 kB\nCached:          90 kB\n")
	write("stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
	s := NewSampler(dir, filepath.Join(dir, "no-cgroupfs"), dir)
	write("stat", "cpu  150 0 150 900 0 0 0 0 0 0\n")
	r, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if r.MemTotal != 1000<<10 || r.MemUsed != 750<<10 || r.MemCache != 100<<10 {
		t.Errorf("memory %d/%d, cache %d", r.MemUsed, r.MemTotal, r.MemCache)
	}
	if r.CPUUsedPct != 50 {
		t.Errorf("cpu %v%%, want 50", r.CPUUsedPct)
	}
	write("stat", "garbage\n")
	if _, err := s.Sample(); err == nil {
		t.Error("malformed /proc/stat accepted")
	}
}

// The cgroup's limits win over the machine's /proc, on v1 and on v2.
func TestSampleCgroup(t *testing.T) {
	for _, tc := range []struct {
		name       string
		selfCgroup string
		files      map[string]string
	}{
		{"v1", "4:memory:/sb\n2:cpu:/sb\n3:cpuacct:/sb\n1:name=systemd:/\n", map[string]string{
			"memory/sb/memory.limit_in_bytes": "536870912\n",
			"memory/sb/memory.usage_in_bytes": "104857600\n",
			"memory/sb/memory.stat":           "cache 1\ntotal_cache 8388608\ntotal_inactive_file 4194304\n",
			"cpu/sb/cpu.cfs_quota_us":         "100000\n",
			"cpu/sb/cpu.cfs_period_us":        "100000\n",
			"cpuacct/sb/cpuacct.usage":        "1000\n",
		}},
		{"v2", "0::/sb\n", map[string]string{
			"cgroup.controllers": "cpu memory\n",
			"sb/memory.max":      "536870912\n",
			"sb/memory.current":  "104857600\n",
			"sb/memory.stat":     "anon 1\nfile 8388608\ninactive_file 4194304\n",
			"sb/cpu.max":         "100000 100000\n",
			"sb/cpu.stat":        "usage_usec 1\nuser_usec 1\n",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proc, cg := t.TempDir(), t.TempDir()
			write := func(root, name, body string) {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			write(proc, "meminfo", "MemTotal:       8000000 kB\nMemAvailable:    4000000 kB\n")
			write(proc, "stat", "cpu  100 0 100 800 0 0 0 0 0 0\n")
			write(proc, "self/cgroup", tc.selfCgroup)
			for name, body := range tc.files {
				write(cg, name, body)
			}
			s := NewSampler(proc, cg, proc)
			time.Sleep(150 * time.Millisecond)
			// Half a CPU's worth of the time since the sampler started.
			half := uint64(time.Since(s.start).Nanoseconds() / 2)
			if tc.name == "v1" {
				write(cg, "cpuacct/sb/cpuacct.usage", fmt.Sprint(1000+half))
			} else {
				write(cg, "sb/cpu.stat", fmt.Sprintf("usage_usec %d\n", 1+half/1000))
			}
			r, err := s.Sample()
			if err != nil {
				t.Fatal(err)
			}
			if r.MemTotal != 512<<20 || r.MemUsed != 96<<20 || r.MemCache != 8<<20 || r.CPUCount != 1 {
				t.Errorf("report %+v: want 512 MiB total, 96 MiB used (usage less inactive file cache), 8 MiB cache, 1 CPU", r)
			}
			if r.CPUUsedPct < 30 || r.CPUUsedPct > 60 {
				t.Errorf("cpu %v%%, want about 50", r.CPUUsedPct)
			}
		})
	}
}

// Without a limit (v2's "max", v1's huge number) the machine's figures stay.
func TestSampleCgroupUnlimited(t *testing.T) {
	proc, cg := t.TempDir(), t.TempDir()
	for name, body := range map[string]string{
		filepath.Join(proc, "meminfo"):          "MemTotal:       1000 kB\nMemAvailable:    250 kB\n",
		filepath.Join(proc, "stat"):             "cpu  100 0 100 800 0 0 0 0 0 0\n",
		filepath.Join(proc, "self", "cgroup"):   "0::/sb\n",
		filepath.Join(cg, "cgroup.controllers"): "memory\n",
		filepath.Join(cg, "sb", "memory.max"):   "max\n",
		filepath.Join(cg, "sb", "cpu.max"):      "max 100000\n",
	} {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewSampler(proc, cg, proc).Sample()
	if err != nil {
		t.Fatal(err)
	}
	if r.MemTotal != 1000<<10 || r.MemUsed != 750<<10 || r.CPUCount != runtime.NumCPU() {
		t.Errorf("report %+v: want the machine's memory and CPUs", r)
	}
}
