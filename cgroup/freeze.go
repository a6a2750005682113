package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/errdefs"
)

const (
	// killRound is how long Kill waits for a group to empty before it
	// signals again.
	killRound = 250 * time.Millisecond
	// killFreezeWait bounds the freeze Kill does before signalling: tasks
	// in uninterruptible sleep can keep a group FREEZING, and SIGKILL
	// reaches them anyway once they wake.
	killFreezeWait = time.Second
)

// freezer is the group's directory whose freezer Freeze and Thaw use and
// whether it is a v2 one: cgroup.freeze on a v2 host, and on a hybrid one
// when its v2 mirror has it, else the v1 freezer controller. dir is ""
// when there is neither. The v2 freezer wins on hybrid hosts: the v1 one
// was seen to stay FREEZING for good (a restored sandbox, an idle one
// with envd's process starts behind it), where the v2 one never was.
func (g *Group) freezer() (dir string, v2 bool) {
	d, hasV1 := g.v1["freezer"]
	if g.v2 != "" && !hasV1 {
		return g.v2, true
	}
	if g.v2 != "" {
		if _, err := os.Stat(filepath.Join(g.v2, "cgroup.freeze")); err == nil {
			return g.v2, true
		}
	}
	return d, false
}

// FreezerDir is the directory of the group's freezer (see freezer), for
// tools that freeze the group themselves (CRIU's --freeze-cgroup); "" when
// the host has none.
func (g *Group) FreezerDir() string {
	dir, _ := g.freezer()
	return dir
}

// Frozen reports whether the group's freezer holds its tasks.
func (g *Group) Frozen() bool {
	dir, v2 := g.freezer()
	if dir == "" {
		return false
	}
	if v2 {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.freeze"))
		return err == nil && strings.TrimSpace(string(b)) == "1"
	}
	b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
	return err == nil && strings.TrimSpace(string(b)) != "THAWED"
}

// Freeze stops every task in the group and returns once all of them are
// frozen (v1 freezer.state FROZEN; v2 cgroup.events "frozen 1"). If ctx
// ends first the group is thawed again, so it is never left half frozen.
func (g *Group) Freeze(ctx context.Context) error {
	dir, v2 := g.freezer()
	if dir == "" {
		return fmt.Errorf("freeze cgroup %s: no freezer (v1 freezer controller or cgroup v2): %w", g.name, errdefs.ErrUnsupported)
	}
	if err := setFrozen(ctx, dir, v2, true); err != nil {
		// Best effort, on a context of its own: ctx has likely ended.
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = setFrozen(tctx, dir, v2, false)
		return fmt.Errorf("freeze cgroup %s: %w", g.name, err)
	}
	return nil
}

// Thaw resumes the group's tasks where they stopped and returns once the
// group reports itself thawed.
func (g *Group) Thaw(ctx context.Context) error {
	dir, v2 := g.freezer()
	if dir == "" {
		return fmt.Errorf("thaw cgroup %s: no freezer (v1 freezer controller or cgroup v2): %w", g.name, errdefs.ErrUnsupported)
	}
	if err := setFrozen(ctx, dir, v2, false); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", g.name, err)
	}
	return nil
}

// setFrozen asks the freezer of dir to freeze or thaw and waits until the
// group reports that state.
func setFrozen(ctx context.Context, dir string, v2, frozen bool) error {
	file, value, want := "freezer.state", "THAWED", "THAWED"
	if v2 {
		file, value = "cgroup.freeze", "0"
	}
	if frozen {
		value, want = "FROZEN", "FROZEN"
		if v2 {
			value = "1"
		}
	}
	if err := writeFile(dir, file, value); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", filepath.Join(dir, file), errdefs.ErrNotFound)
		}
		return err
	}
	return poll(ctx, func() (bool, error) {
		if v2 {
			ev, err := readKeyed(dir, "cgroup.events")
			if err != nil {
				return false, err
			}
			return (ev["frozen"] == 1) == frozen, nil
		}
		// Reading freezer.state also advances a FREEZING group.
		b, err := os.ReadFile(filepath.Join(dir, "freezer.state"))
		if err != nil {
			return false, err
		}
		return strings.TrimSpace(string(b)) == want, nil
	})
}

// Kill kills every process in the group and returns once the group is
// empty. With cgroup.kill (v2, or the hybrid mirror; Linux 5.14+) the
// kernel kills the whole tree at once, forks included; otherwise Kill
// freezes the group, SIGKILLs each process, thaws it so the signals land,
// and repeats until nothing is left. A frozen group is killed too (and
// ends thawed). On v2, cgroup.kill also kills the processes of child
// groups; groups are meant to be leaves.
func (g *Group) Kill(ctx context.Context) error {
	dirs := g.existing()
	if len(dirs) == 0 {
		return fmt.Errorf("kill cgroup %s: %w", g.name, errdefs.ErrNotFound)
	}
	if err := g.kill(ctx, dirs); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", g.name, err)
	}
	return nil
}

// kill empties the group as seen through dirs (its existing directories).
func (g *Group) kill(ctx context.Context, dirs []string) error {
	killFile := false
	if g.h.useKill && g.v2 != "" {
		_, err := os.Stat(filepath.Join(g.v2, "cgroup.kill"))
		killFile = err == nil
	}
	for round := 0; ; round++ {
		pids, err := readProcs(dirs)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if killFile {
			if err := writeFile(g.v2, "cgroup.kill", "1"); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("write cgroup.kill: %w", err)
			}
			// A task frozen by the v1 freezer sits on its SIGKILL until
			// thawed; cgroup.kill reaches only the tasks in the mirror.
			if err := g.thawQuietly(ctx); err != nil {
				return err
			}
		}
		if !killFile || round > 0 {
			if err := g.signalAll(ctx, dirs); err != nil {
				return err
			}
		}
		rctx, cancel := context.WithTimeout(ctx, killRound)
		err = poll(rctx, func() (bool, error) {
			pids, err := readProcs(dirs)
			return len(pids) == 0, err
		})
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			left, _ := readProcs(dirs)
			return fmt.Errorf("%d processes left: %w", len(left), ctx.Err())
		case !errors.Is(err, context.DeadlineExceeded):
			return err
		}
	}
}

// signalAll SIGKILLs every process in dirs while the group is frozen, so
// that none can fork a child the signal misses and none can exit and have
// its pid reused before the signal; then it thaws the group so that the
// signals are delivered (v1 frozen tasks do not die until thawed).
func (g *Group) signalAll(ctx context.Context, dirs []string) error {
	dir, v2 := g.freezer()
	if dir != "" {
		fctx, cancel := context.WithTimeout(ctx, killFreezeWait)
		err := setFrozen(fctx, dir, v2, true)
		cancel()
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		// Not fully frozen: signal anyway, the next round catches forks.
	}
	pids, err := readProcs(dirs)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue // a thread of ours starting a process in the group (JoinThread)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal pid %d: %w", pid, err)
		}
	}
	return g.thawQuietly(ctx)
}

// thawQuietly thaws the group if it has a freezer; a group whose freezer
// directory is already gone needs no thawing.
func (g *Group) thawQuietly(ctx context.Context) error {
	dir, v2 := g.freezer()
	if dir == "" {
		return nil
	}
	err := setFrozen(ctx, dir, v2, false)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil
	}
	return err
}

// poll calls cond with a growing pause (1 ms up to 20 ms) until it reports
// true, fails, or ctx ends. Cgroup state changes have no cheap
// notification on v1, and they complete within milliseconds.
func poll(ctx context.Context, cond func() (bool, error)) error {
	delay := time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		t.Reset(delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 20*time.Millisecond)
	}
}
