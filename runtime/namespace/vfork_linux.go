package namespace

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/cgroup"
)

// A freeze can catch a process between vfork and its child's exec: the
// parent waits for the child, killable but not stoppable, and the child is
// frozen before its exec. CRIU, told to use the freezer, seizes every task
// of the frozen group and thaws it, and the child then stops for CRIU
// before it can exec, so the parent never stops: the dump hangs until
// CRIU's timeout (10 s) and fails ("Unseizable non-zombie …, state D").
// Shells start every command with vfork (dash) and Go's os/exec does too,
// so a busy sandbox is caught now and then. The driver therefore freezes
// the sandbox itself before the dump, at a moment no thread of it is in a
// vfork: a freeze that caught one is thawed, for the child to exec, and
// taken again.

// vforkSettleAttempts bounds the freezes freezeOutsideVfork takes; a
// caught vfork lasts as long as its child takes to exec, microseconds to
// milliseconds, so a few attempts suffice.
const vforkSettleAttempts = 20

// vforkWaits are the kernel functions a vfork's parent waits in, as
// /proc/PID/wchan names them (wait_for_vfork_done, inlined into
// kernel_clone since Linux 5.10; _do_fork and do_fork before).
var vforkWaits = []string{"kernel_clone", "wait_for_vfork_done", "_do_fork", "do_fork"}

// freezeOutsideVfork freezes g at a moment none of its threads waits for
// a vfork's child. When every attempt caught one, g is left frozen all
// the same: CRIU may still time out, and says so.
func freezeOutsideVfork(ctx context.Context, g *cgroup.Group) error {
	for attempt := 1; ; attempt++ {
		if err := g.Freeze(ctx); err != nil {
			return err
		}
		tid, err := frozenInVfork(ctx, g)
		if err != nil || tid == 0 || attempt == vforkSettleAttempts {
			return err
		}
		if err := g.Thaw(ctx); err != nil {
			return err
		}
		if err := sleepCtx(ctx, time.Duration(attempt)*time.Millisecond); err != nil {
			return err
		}
	}
}

// frozenInVfork is a thread of the frozen group g that waits for its
// vfork's child, or 0. A vfork's parent counts as frozen as it begins to
// wait, before it is off its CPU, when its wchan still reads "0": the
// threads are read again until none is on a CPU.
func frozenInVfork(ctx context.Context, g *cgroup.Group) (int, error) {
	for range 100 {
		pids, err := g.Procs()
		if err != nil {
			return 0, err
		}
		tid, running := threadWaits(pids)
		if !running {
			return tid, nil
		}
		if err := sleepCtx(ctx, 100*time.Microsecond); err != nil {
			return 0, err
		}
	}
	return 0, nil
}

// threadWaits reads where the threads of the processes pids sleep: one
// that waits for its vfork's child (or 0), and whether one is on a CPU.
func threadWaits(pids []int) (vfork int, running bool) {
	for _, pid := range pids {
		tids, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			continue // gone
		}
		for _, t := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/wchan", pid, t.Name()))
			if err != nil {
				continue
			}
			switch w := strings.TrimSpace(string(b)); {
			case w == "0" || w == "":
				running = true
			case slices.Contains(vforkWaits, w) && vfork == 0:
				vfork, _ = strconv.Atoi(t.Name())
			}
		}
	}
	return vfork, running
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
