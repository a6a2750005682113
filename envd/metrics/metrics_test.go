package metrics

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSampleReal(t *testing.T) {
	r, err := NewSampler("/proc", "/").Sample()
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
	write("meminfo", "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n")
	write("stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
	s := NewSampler(dir, dir)
	write("stat", "cpu  150 0 150 900 0 0 0 0 0 0\n")
	r, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if r.MemTotal != 1000<<10 || r.MemUsed != 750<<10 {
		t.Errorf("memory %d/%d", r.MemUsed, r.MemTotal)
	}
	if r.CPUUsedPct != 50 {
		t.Errorf("cpu %v%%, want 50", r.CPUUsedPct)
	}
	write("stat", "garbage\n")
	if _, err := s.Sample(); err == nil {
		t.Error("malformed /proc/stat accepted")
	}
}
