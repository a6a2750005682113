package agent_test

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/agent"
)

// BenchmarkHibernateMany pauses ROOST_BENCH_HIBERNATE (default 100) idle
// namespace sandboxes as E2B's pause does (hibernated, CRIU) one after
// another, then resumes them all, and checks each is intact: a file it
// wrote and a process it started. It reports the total time of each
// round, the p50 of one sandbox's pause and resume, and how many came
// back whole and hibernated (not frozen). Beside them, in the same run:
// the same sandboxes paused and resumed with the freezer alone.
func BenchmarkHibernateMany(b *testing.B) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("ROOST_BENCH_HIBERNATE")); err == nil && v > 0 {
		n = v
	}
	h := newHost(b)
	h.slotHi = h.slotLo + n + 8
	a := h.start()
	ids := make([]string, n)
	envds := make([]string, n)
	for i := range ids {
		sb, err := a.m.Create(ctxT(b), agent.CreateRequest{Timeout: time.Hour})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = sb.ID
		mustExecB(b, sb.Envd.String(), "echo "+sb.ID+" > /tmp/me; nohup sleep 100000 >/dev/null 2>&1 &")
	}
	var pauseTotal, resumeTotal, freezeTotal, thawTotal time.Duration
	var pauses, resumes []time.Duration
	hibernated, intact := 0, 0
	for b.Loop() {
		freezeTotal += each(b, ids, nil, func(id string) error { _, err := a.m.Pause(ctxT(b), id); return err })
		thawTotal += each(b, ids, nil, func(id string) error { _, err := a.m.Resume(ctxT(b), id, 0, false); return err })
		hibernated, intact = 0, 0
		pauseTotal += each(b, ids, &pauses, func(id string) error {
			sb, err := a.m.PauseToDisk(ctxT(b), id)
			if sb.Hibernated {
				hibernated++
			}
			return err
		})
		resumeTotal += each(b, ids, &resumes, func(id string) error {
			sb, err := a.m.Resume(ctxT(b), id, 0, false)
			if err != nil {
				return err
			}
			envds[indexOf(ids, id)] = sb.Envd.String()
			return nil
		})
		for i, id := range ids {
			out, code, err := execIn(ctxT(b), envds[i], "", "cat /tmp/me; pgrep -c -x sleep")
			if err == nil && code == 0 && out == id+"\n1\n" {
				intact++
			}
		}
	}
	rounds := float64(b.N)
	b.ReportMetric(pauseTotal.Seconds()/rounds, "hibernate-all-s")
	b.ReportMetric(resumeTotal.Seconds()/rounds, "restore-all-s")
	b.ReportMetric(freezeTotal.Seconds()/rounds, "freeze-all-s")
	b.ReportMetric(thawTotal.Seconds()/rounds, "thaw-all-s")
	b.ReportMetric(p50ms(pauses), "hibernate-p50-ms")
	b.ReportMetric(p50ms(resumes), "restore-p50-ms")
	b.ReportMetric(float64(n), "sandboxes")
	b.ReportMetric(float64(hibernated), "hibernated")
	b.ReportMetric(float64(intact), "intact")
	if intact != n {
		b.Errorf("%d of %d sandboxes intact after hibernation and restore", intact, n)
	}
}

// each runs op on every id in turn, recording each one's time in times
// (when set), and returns the total.
func each(b *testing.B, ids []string, times *[]time.Duration, op func(id string) error) time.Duration {
	b.Helper()
	start := time.Now()
	for _, id := range ids {
		t0 := time.Now()
		if err := op(id); err != nil {
			b.Fatalf("sandbox %s: %v", id, err)
		}
		if times != nil {
			*times = append(*times, time.Since(t0))
		}
	}
	return time.Since(start)
}

func indexOf(ids []string, id string) int {
	for i, v := range ids {
		if v == id {
			return i
		}
	}
	return -1
}

func mustExecB(b *testing.B, envd, script string) {
	b.Helper()
	out, code, err := execIn(ctxT(b), envd, "", script)
	if err != nil || code != 0 {
		b.Fatalf("exec %q: exit %d, %v: %s", script, code, err, strings.TrimSpace(out))
	}
}
