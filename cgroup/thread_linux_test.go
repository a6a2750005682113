package cgroup

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"testing"
)

// TestJoinThread starts a process from a thread that joined a group: the
// process is born in the group in every hierarchy (v1 through the
// thread, cgroup2 through CLONE_INTO_CGROUP), and once the thread has
// left (and still runs), the group holds the process and not the test's
// own.
func TestJoinThread(t *testing.T) {
	for _, v := range variants(t, false) {
		t.Run(v.name, func(t *testing.T) {
			g := create(t, v.h, testParent(t, v.h)+"/joined", Limits{})
			before, err := os.ReadFile("/proc/self/cgroup")
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sleep", "1000")
			done := make(chan error, 1)
			release := make(chan struct{}) // the thread lives on until the group is read
			defer close(release)
			go func() {
				defer func() { <-release }()
				runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
				fd, leave, err := g.JoinThread()
				if err != nil {
					done <- err
					return
				}
				if fd >= 0 {
					cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
				}
				err = cmd.Start()
				if lerr := leave(); err == nil {
					err = lerr
				}
				done <- err
			}()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
			procs, err := g.Procs()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(procs, []int{cmd.Process.Pid}) {
				t.Errorf("group holds %v, want only the started process %d (this process is %d)", procs, cmd.Process.Pid, os.Getpid())
			}
			for _, d := range g.dirs {
				pids, err := readProcs([]string{d})
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(pids, []int{cmd.Process.Pid}) {
					t.Errorf("%s holds %v, want %d", d, pids, cmd.Process.Pid)
				}
			}
			if after, _ := os.ReadFile("/proc/self/cgroup"); string(after) != string(before) {
				t.Errorf("this process's groups changed:\n%s\nwant\n%s", after, before)
			}
		})
	}
}
