package cgroup

import (
	"os"
	"testing"
)

func TestKeyed(t *testing.T) {
	const stat = "cache 4096\nrss 8192\ntotal_cache 12288\ntotal_inactive_file 4096\nfile 7\nbad x1\n"
	for _, tt := range []struct {
		key  string
		want uint64
		ok   bool
	}{
		{"cache", 4096, true},
		{"total_cache", 12288, true},
		{"total_inactive_file", 4096, true},
		{"file", 7, true},
		{"inactive_file", 0, false}, // only as a suffix of another key
		{"rs", 0, false},
		{"bad", 0, false},
		{"", 0, false},
	} {
		got, ok := keyed([]byte(stat), tt.key)
		if got != tt.want || ok != tt.ok {
			t.Errorf("keyed(%q) = %d, %v; want %d, %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
	if got, ok := keyed([]byte("usage_usec 12"), "usage_usec"); got != 12 || !ok {
		t.Errorf("a last line without a newline: %d, %v", got, ok)
	}
}

// TestMeter reads a real group through its meter as through Stats: the
// same CPU time, tasks and limits, and the page cache of a file the
// group's process wrote.
func TestMeter(t *testing.T) {
	for _, v := range variants(t, false) {
		t.Run(v.name, func(t *testing.T) {
			lim := Limits{CPUs: 1.5, MemoryBytes: 256 << 20}
			if v.name == "unified" { // a hybrid host's: no controllers
				lim = Limits{}
			}
			g := create(t, v.h, testParent(t, v.h)+"/meter", lim)
			m, err := g.OpenMeter()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			file := t.TempDir() + "/cached"
			// The shell marks with a builtin when head has exited and sleep
			// started: from then on its group holds exactly two tasks (the
			// loop forks nothing), so the meter and Stats read the same.
			start(t, g, nil, "sh", "-c", "head -c 8388608 /dev/zero > "+file+"; sleep 1000 & : > "+file+".ready; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; wait")
			var u Usage
			eventually(t, "two tasks, some CPU and 8 MiB of cache", func() bool {
				if _, err := os.Stat(file + ".ready"); err != nil {
					return false
				}
				if u, err = m.Read(); err != nil {
					t.Fatal(err)
				}
				return u.Pids == 2 && u.CPUUsage > 0 && (u.MemoryBytes == 0 || u.MemoryCache >= 8<<20)
			})
			s := stats(t, g)
			t.Logf("meter %+v, stats %+v", u, s)
			if u.CPUUsage > s.CPUUsage || u.MemoryLimit != s.MemoryLimit || u.Pids != s.Pids {
				t.Errorf("meter %+v disagrees with stats %+v", u, s)
			}
			if u.MemoryBytes > 0 && (u.MemoryCache > u.MemoryBytes || u.MemoryInactiveFile > u.MemoryCache) {
				t.Errorf("cache %d, inactive %d of %d bytes", u.MemoryCache, u.MemoryInactiveFile, u.MemoryBytes)
			}
			if lim.CPUs != 0 && u.CPUs != lim.CPUs {
				t.Errorf("CPUs %v, want %v", u.CPUs, lim.CPUs)
			}
			if err := g.Delete(ctxFor(t)); err != nil {
				t.Fatal(err)
			}
			if _, err := m.Read(); err == nil {
				t.Error("a meter reads a deleted group")
			}
			m.Close()
			m.Close()
		})
	}
}
