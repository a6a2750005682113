package microvm

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"roost.dev/roost/runtime/proc"
)

// sleeperEnv makes this test binary sleep, as a stand-in VMM process.
const sleeperEnv = "ROOST_TEST_SLEEPER"

func TestMain(m *testing.M) {
	if os.Getenv(sleeperEnv) != "" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startSleeper(t *testing.T, id string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "--id", "roost-"+id)
	cmd.Env = append(os.Environ(), sleeperEnv+"=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func TestProcessLivenessAndPrune(t *testing.T) {
	kept, known, stray := startSleeper(t, "kept"), startSleeper(t, "known"), startSleeper(t, "stray")
	p, err := proc.Of(stray.Process.Pid)
	if err != nil || !p.Alive() {
		t.Fatalf("proc.Of(stray): %+v %v", p, err)
	}
	// A disk image of 8 MiB with 64 KiB written, and the sleeper's
	// network namespace (this one) as the VM's.
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	m := &Machine{State: State{ID: "stray", Process: p, MemoryMB: 256, VCPUs: 2, Interface: "lo"}}
	if st, err := m.stats(disk); err != nil || st.MemoryLimit != 256<<20 || st.MemoryBytes == 0 || st.MemoryWorkingSet != st.MemoryBytes ||
		st.Pids < 1 || st.VCPUs != 2 || st.DiskTotal != 8<<20 || st.DiskUsed < 64<<10 || st.DiskUsed >= 8<<20 {
		t.Errorf("stats %+v %v", st, err)
	}
	m.Process, m.DiskMB = proc.Process{}, 16
	if st, err := m.stats(disk); err != nil || st.MemoryLimit != 256<<20 || st.MemoryBytes != 0 || st.DiskTotal != 16<<20 {
		t.Errorf("stats of a hibernated vm %+v %v", st, err)
	}
	vmms, err := StrayVMMs("microvm", "--id", "roost-")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*exec.Cmd{kept, known, stray} {
		if vmms[c.Process.Pid] == "" {
			t.Errorf("StrayVMMs missed pid %d (%v)", c.Process.Pid, c.Args)
		}
	}
	err = PruneVMMs("microvm", "--id", "roost-", []string{"kept"}, func(id string) bool { return id == "known" }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := stray.Wait(); err == nil {
		t.Error("the stray was not killed")
	}
	for _, c := range []*exec.Cmd{kept, known} {
		if q, _ := proc.Of(c.Process.Pid); !q.Alive() {
			t.Errorf("prune killed %v", c.Args)
		}
	}
	if p.Alive() {
		t.Error("a killed process counts as alive")
	}
}
