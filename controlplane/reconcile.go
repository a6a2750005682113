package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// reconciler makes the store and the hosts converge, both ways, every
// round: records follow what their host reports (lost when it stops
// answering or no longer has them, recovered when it comes back with
// them), records a crash left behind are settled, and a host runs no
// sandbox the store has no live record of for longer than
// Config.CreateGrace. It runs on Run's goroutine only: its maps need no
// lock, and die with the process (a restarted control plane only waits
// a grace longer).
type reconciler struct {
	s *Server
	// misses counts each host's consecutive unanswered rounds.
	misses map[string]int
	// unknown is, by host and then sandbox, when the reconciler first saw
	// the host run a sandbox with no live record.
	unknown map[string]map[string]time.Time
}

func newReconciler(s *Server) *reconciler {
	return &reconciler{s: s, misses: map[string]int{}, unknown: map[string]map[string]time.Time{}}
}

// listing is one host's answer to ListSandboxes.
type listing struct {
	at time.Time // when the host was asked
	// has is the host's sandboxes by ID; nil when it did not answer.
	has map[string]*hostagentv1.Sandbox
}

func (l listing) answered() bool { return l.has != nil }

// liveStates are the records that own a sandbox on their host: one in
// any other state (stopped, error) or with no record at all runs on
// borrowed time.
var liveStates = []store.SandboxState{store.SandboxStarting, store.SandboxRunning, store.SandboxPaused, store.SandboxLost}

func (rc *reconciler) round(ctx context.Context) {
	s := rc.s
	hosts, err := s.store.ListHosts(ctx)
	if err != nil {
		s.log.Warn("reconcile: list hosts failed", "err", err)
		return
	}
	known := map[string]bool{}
	for _, h := range hosts {
		if ctx.Err() != nil {
			return
		}
		known[h.ID] = true
		if err := rc.host(ctx, h); err != nil {
			s.log.Warn("reconcile host failed", "host", h.ID, "err", err)
		}
	}
	for id := range rc.unknown {
		if !known[id] {
			delete(rc.unknown, id)
		}
	}
	for id := range rc.misses {
		if !known[id] {
			delete(rc.misses, id)
		}
	}
}

// host reconciles one host.
func (rc *reconciler) host(ctx context.Context, h store.Host) error {
	s := rc.s
	l := listing{at: s.store.Now()}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := s.agents.For(h).ListSandboxes(cctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{}))
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		rc.misses[h.ID]++
		s.log.Warn("reconcile: agent did not answer", "host", h.ID, "misses", rc.misses[h.ID], "err", err)
		if rc.misses[h.ID] < s.cfg.DownAfter {
			return nil
		}
		if h.State != store.HostDown {
			if err := s.store.SetHostState(ctx, h.ID, store.HostDown); err != nil {
				return fmt.Errorf("mark host down: %w", err)
			}
			s.hostsChanged(ctx)
			s.log.Warn("host down", "host", h.ID)
		}
		_, err := rc.records(ctx, h, l)
		return err
	}
	delete(rc.misses, h.ID)
	s.avoid.forget(h.ID)
	if h.State == store.HostDown {
		if err := s.store.SetHostState(ctx, h.ID, store.HostReady); err != nil {
			return fmt.Errorf("mark host ready: %w", err)
		}
		s.hostsChanged(ctx)
		s.log.Info("host back up", "host", h.ID)
	}
	l.has = map[string]*hostagentv1.Sandbox{}
	var usage store.HostUsage
	for _, sb := range resp.Msg.GetSandboxes() {
		l.has[sb.GetSandboxId()] = sb
		usage.Sandboxes++
		usage.VCPUs += int(sb.GetLimits().GetVcpus())
		usage.MemoryMB += int64(sb.GetLimits().GetMemoryMb())
	}
	if s.cfg.Local != nil && h.ID == s.cfg.Local.HostID {
		// roost up's own agent sends no heartbeats: this listing stands
		// in for one, so /v1/hosts shows its usage as for any other.
		if err := s.store.Heartbeat(ctx, h.ID, l.at, usage); err != nil {
			s.log.Warn("reconcile: record local host usage", "host", h.ID, "err", err)
		}
	}
	recorded, err := rc.records(ctx, h, l)
	if err != nil {
		return err
	}
	rc.reapUnknown(ctx, h, l, recorded)
	return nil
}

// records brings every record of the host in line with its listing and
// returns the IDs it decided on: live, and stopped ones (which it settles
// itself, past the grace). It reads the records' statuses only: a round
// compares every sandbox of every host, and acts on few; what acts reads
// the whole record it needs.
func (rc *reconciler) records(ctx context.Context, h store.Host, l listing) (map[string]bool, error) {
	recs, err := rc.s.store.SandboxStatuses(ctx, h.ID, append([]store.SandboxState{store.SandboxStopped}, liveStates...)...)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes of host: %w", err)
	}
	recorded := make(map[string]bool, len(recs))
	for _, sb := range recs {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rc.record(ctx, h, sb, l)
		recorded[sb.ID] = true
	}
	return recorded, nil
}

// record decides one record's fate. Records changed after the listing
// are left for the next round: the listing may predate what changed them.
func (rc *reconciler) record(ctx context.Context, h store.Host, sb store.SandboxStatus, l listing) {
	if sb.UpdatedAt.After(l.at) {
		return
	}
	got, has := l.has[sb.ID]
	state := got.GetState()
	if has && state == hostagentv1.SandboxState_SANDBOX_STATE_STOPPED {
		has = false // being destroyed
	}
	switch sb.State {
	case store.SandboxStarting:
		rc.starting(ctx, h, sb, l, has, state)
	case store.SandboxRunning, store.SandboxPaused:
		rc.active(ctx, h, sb, l, has, got)
	case store.SandboxLost:
		rc.lost(ctx, h, sb, l, has, got)
	case store.SandboxStopped:
		if l.at.Sub(sb.UpdatedAt) >= rc.s.cfg.CreateGrace {
			// The claim of a timeout or a settle whose process died
			// before it deleted the record.
			rc.settle(ctx, h, sb, l, has, "stopped for longer than the create grace")
		}
	}
}

// starting settles a create that has had its time: the record is older
// than Config.CreateGrace, longer than any create handler waits for its
// agent, so no client was ever answered with this sandbox and none can
// use it. Whatever its host runs of it is destroyed and the record
// deleted; a host still creating it is left to finish (its create
// request is gone, so the agent unwinds it, or it ends as unknown).
func (rc *reconciler) starting(ctx context.Context, h store.Host, sb store.SandboxStatus, l listing, has bool, state hostagentv1.SandboxState) {
	if l.at.Sub(sb.CreatedAt) < rc.s.cfg.CreateGrace {
		return
	}
	if has && state == hostagentv1.SandboxState_SANDBOX_STATE_STARTING {
		return
	}
	reason := "its create never returned to a client"
	if l.answered() && !has {
		reason = "its create never finished: its host does not have it"
	}
	rc.settle(ctx, h, sb, l, has, reason)
}

// active follows a running or paused record to its host: lost when the
// host no longer has it (deleted when its timeout had passed: the agent
// reaped it), or did not answer; otherwise the state the host reports.
func (rc *reconciler) active(ctx context.Context, h store.Host, sb store.SandboxStatus, l listing, has bool, got *hostagentv1.Sandbox) {
	s := rc.s
	switch {
	case !l.answered():
		rc.set(ctx, h, sb, l, store.SandboxLost, "its host stopped answering", nil)
	case !has && sb.State == store.SandboxRunning && expired(sb, l.at):
		rec, ok := rc.whole(ctx, h, sb)
		if !ok {
			return
		}
		s.evict(sb.ID)
		if err := s.store.DeleteSandbox(ctx, sb.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Warn("reconcile: delete expired sandbox failed", "sandbox", sb.ID, "host", h.ID, "err", err)
			return
		}
		s.emit(rec, store.EventKilled, reasonTimeout)
		s.log.Info("reconcile: sandbox record removed", "sandbox", sb.ID, "host", h.ID, "reason", "its host reaped it at its timeout")
	case !has:
		rc.set(ctx, h, sb, l, store.SandboxLost, "its host no longer runs it", nil)
	case got.GetState() == hostagentv1.SandboxState_SANDBOX_STATE_PAUSED && sb.State == store.SandboxRunning:
		rc.set(ctx, h, sb, l, store.SandboxPaused, "its host paused it", nil)
	case got.GetState() == hostagentv1.SandboxState_SANDBOX_STATE_RUNNING && sb.State == store.SandboxPaused:
		rc.set(ctx, h, sb, l, store.SandboxRunning, "its host resumed it", got)
	}
}

// lost recovers a lost sandbox its host runs again (a network blip, an
// agent restart), in the state the host reports. One the host does not
// have stays lost, visible to GET, until it is deleted or its timeout
// passes: then nothing of it can come back and the record goes.
func (rc *reconciler) lost(ctx context.Context, h store.Host, sb store.SandboxStatus, l listing, has bool, got *hostagentv1.Sandbox) {
	s := rc.s
	switch {
	case has && got.GetState() == hostagentv1.SandboxState_SANDBOX_STATE_RUNNING:
		rc.set(ctx, h, sb, l, store.SandboxRunning, "recovered: its host runs it", got)
	case has && got.GetState() == hostagentv1.SandboxState_SANDBOX_STATE_PAUSED:
		rc.set(ctx, h, sb, l, store.SandboxPaused, "recovered: its host has it paused", nil)
	case l.answered() && !has && expired(sb, l.at):
		rec, ok := rc.whole(ctx, h, sb)
		if !ok {
			return
		}
		if err := s.store.DeleteSandbox(ctx, sb.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			s.log.Warn("reconcile: delete lost sandbox failed", "sandbox", sb.ID, "err", err)
			return
		}
		s.emit(rec, store.EventKilled, reasonLostExpiry)
		s.log.Info("reconcile: sandbox record removed", "sandbox", sb.ID, "host", h.ID,
			"reason", "lost, its host does not have it, and its timeout has passed")
	}
}

// whole reads the whole record of sb, which an event needs; ok is false
// when it is gone or has changed since its status was read (the next
// round decides on it again).
func (rc *reconciler) whole(ctx context.Context, h store.Host, sb store.SandboxStatus) (rec store.Sandbox, ok bool) {
	rec, err := rc.s.store.LookupSandbox(ctx, sb.ID)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return rec, false
	case err != nil:
		rc.s.log.Warn("reconcile: read sandbox failed", "sandbox", sb.ID, "host", h.ID, "err", err)
		return rec, false
	}
	return rec, rec.State == sb.State && rec.UpdatedAt.Equal(sb.UpdatedAt)
}

// expired reports whether the sandbox's timeout had passed at t.
func expired(sb store.SandboxStatus, t time.Time) bool {
	return !sb.EndAt.IsZero() && !sb.EndAt.After(t)
}

// set moves a record to state to, unless it changed after the listing;
// from, when its host reported it, takes the host's end (the agent
// enforces it). A lost record keeps why in Error.
func (rc *reconciler) set(ctx context.Context, h store.Host, sb store.SandboxStatus, l listing, to store.SandboxState, why string, from *hostagentv1.Sandbox) {
	s := rc.s
	var before store.Sandbox
	rec, err := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
		if cur.UpdatedAt.After(l.at) || cur.State != sb.State {
			return errSkip
		}
		before = *cur
		cur.State, cur.Error = to, ""
		if to == store.SandboxLost {
			cur.Error = why
		}
		if end := from.GetEndAt(); end != nil {
			cur.EndAt = end.AsTime().UTC()
		}
		return nil
	})
	s.evict(sb.ID)
	switch {
	case err == nil:
		level := slog.LevelInfo // recovered, or caught up with its host
		if to == store.SandboxLost {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "reconcile: sandbox state corrected", "sandbox", sb.ID, "host", h.ID,
			"from", sb.State, "state", to, "reason", why)
		rc.emitCorrected(before, rec)
	case !errors.Is(err, errSkip) && !errors.Is(err, errdefs.ErrNotFound):
		s.log.Warn("reconcile: update sandbox failed", "sandbox", sb.ID, "err", err)
	}
}

// emitCorrected emits the event of a state the reconciler corrected
// from before to after.
func (rc *reconciler) emitCorrected(before, after store.Sandbox) {
	s := rc.s
	switch {
	case after.State == store.SandboxLost:
		s.emit(before, store.EventLost, reasonHostLost)
	case before.State == store.SandboxLost:
		s.emit(after, store.EventRecovered, reasonHostBack)
	case after.State == store.SandboxPaused:
		s.emit(after, store.EventPaused, reasonTimeout) // its agent paused it at its timeout
	case after.State == store.SandboxRunning:
		s.emit(after, store.EventResumed, reasonAutoResume) // its agent resumed it on traffic
	}
}

// settle ends a record that owns nothing a client holds: claimed
// (stopped) unless it changed since it was read, then destroyed on its
// host when the host has it, and deleted. A host that fails the destroy
// runs a sandbox with no record, which reapUnknown ends later.
func (rc *reconciler) settle(ctx context.Context, h store.Host, sb store.SandboxStatus, l listing, has bool, reason string) {
	s := rc.s
	log := s.log.With("sandbox", sb.ID, "host", h.ID, "state", sb.State, "reason", reason)
	_, err := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
		if cur.State != sb.State || !cur.UpdatedAt.Equal(sb.UpdatedAt) {
			return errSkip
		}
		cur.State = store.SandboxStopped
		return nil
	})
	switch {
	case errors.Is(err, errSkip), errors.Is(err, errdefs.ErrNotFound):
		return
	case err != nil:
		log.Warn("reconcile: claim sandbox record failed", "err", err)
		return
	}
	s.evict(sb.ID)
	action := "record removed"
	if has {
		action = "destroyed on its host, record removed"
		if err := rc.destroyOnHost(ctx, h, sb.ID); err != nil {
			action = "record removed; host destroy failed, retried once past the grace"
			log = log.With("err", err)
		}
	} else if !l.answered() {
		action = "record removed; its host is destroyed when it answers again"
	}
	if err := s.store.DeleteSandbox(ctx, sb.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		log.Warn("reconcile: delete sandbox record failed", "err", err)
		return
	}
	s.evict(sb.ID)
	log.Warn("reconcile: sandbox settled", "action", action)
}

// reapUnknown destroys what the host runs without a record of this host
// (recorded) or a live one anywhere once it has been seen so for
// Config.CreateGrace: a sandbox whose record was deleted while its host
// was unreachable, whose create was abandoned, whose record is in error,
// or that was made on the agent behind the control plane's back. The
// grace covers a create in flight and a destroy under way.
func (rc *reconciler) reapUnknown(ctx context.Context, h store.Host, l listing, recorded map[string]bool) {
	s := rc.s
	seen := rc.unknown[h.ID]
	next := map[string]time.Time{}
	for id, got := range l.has {
		if recorded[id] || got.GetState() == hostagentv1.SandboxState_SANDBOX_STATE_STOPPED || !rc.unowned(ctx, h, id) {
			continue
		}
		log := s.log.With("sandbox", id, "host", h.ID, "state", got.GetState().String())
		first, ok := seen[id]
		if !ok {
			first = l.at
			log.Warn("reconcile: host runs a sandbox the store has no live record of", "destroy_after", s.cfg.CreateGrace)
		}
		if l.at.Sub(first) < s.cfg.CreateGrace {
			next[id] = first
			continue
		}
		if err := rc.destroyOnHost(ctx, h, id); err != nil {
			log.Warn("reconcile: destroy unknown sandbox failed; retried next round", "err", err)
			next[id] = first
			continue
		}
		log.Warn("reconcile: unknown sandbox destroyed", "seen_for", l.at.Sub(first))
	}
	if len(next) == 0 {
		delete(rc.unknown, h.ID)
		return
	}
	rc.unknown[h.ID] = next
}

// unowned reports whether no live record claims the sandbox on host h,
// looked up now, after the listing. One made meanwhile, or recorded on
// another host entry served by the same agent (its address), is left
// alone. One whose live record names another agent's host is a stale
// copy: a moved sandbox's old copy that its host could not destroy then,
// an import whose move never finished, or a create that was retried on
// another host and succeeded on both. A store error leaves it alone too,
// until a round that can tell.
func (rc *reconciler) unowned(ctx context.Context, h store.Host, id string) bool {
	sb, err := rc.s.store.LookupSandbox(ctx, id)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return true
	case err != nil:
		rc.s.log.Warn("reconcile: look up sandbox failed", "sandbox", id, "host", h.ID, "err", err)
		return false
	case !slices.Contains(liveStates, sb.State):
		return true
	case sb.HostID == h.ID:
		return false
	}
	owner, err := rc.s.store.GetHost(ctx, sb.HostID)
	if err != nil {
		return errors.Is(err, errdefs.ErrNotFound) // its host entry is gone: no agent serves it
	}
	return owner.URL != h.URL
}

// destroyOnHost asks the host to destroy a sandbox; one it no longer has
// is success.
func (rc *reconciler) destroyOnHost(ctx context.Context, h store.Host, id string) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	_, err := rc.s.agents.For(h).DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: id}))
	if err = errdefs.FromConnect("agent destroy sandbox", err); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return nil
}
