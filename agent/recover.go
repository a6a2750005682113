package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// recover compares the records on disk with what runs on the host, once, at
// start-up: sandboxes that still run are re-adopted, those that are gone
// or were half-made are cleaned up, and then the network and the runtime
// prune whatever belongs to no known sandbox. Every decision is logged.
func (m *Manager) recover(ctx context.Context) error {
	root := filepath.Join(m.cfg.DataDir, "sandboxes")
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("agent: read sandboxes: %w", err)
	}
	keepSlots := map[string]int{}
	var keepIDs, orphans []string
	keep := func(id string, slot int) {
		keepIDs = append(keepIDs, id)
		if slot >= 0 {
			keepSlots[id] = slot
		}
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		id := e.Name()
		dir := filepath.Join(root, id)
		log := m.log.With("sandbox", id)
		rec, hdr, err := readRecord(dir)
		switch {
		case errors.Is(err, errRecordVersion):
			// Another agent version's sandbox: not ours to run or to clean.
			slot := -1
			if hdr.Slot != nil {
				slot = *hdr.Slot
				if rerr := m.net.Reserve(slot); rerr != nil {
					log.Warn("slot of a foreign sandbox record not reserved", "slot", slot, "err", rerr)
				}
			}
			log.Warn("recovery: leaving sandbox alone", "reason", "record of another version", "err", err)
			keep(id, slot)
			continue
		case err != nil:
			log.Warn("recovery: removing sandbox", "reason", "no readable record (crashed while being created)", "err", err)
			orphans = append(orphans, dir)
			continue
		case rec.key() != id:
			log.Warn("recovery: removing sandbox", "reason", "record names another sandbox", "record_id", rec.ID)
			orphans = append(orphans, dir)
			continue
		}
		if err := m.net.Reserve(rec.Slot); err != nil {
			log.Error("recovery: leaving sandbox alone", "reason", "its network slot is taken", "slot", rec.Slot, "err", err)
			keepIDs = append(keepIDs, id)
			continue
		}
		sb := &sandbox{dir: dir, rec: rec}
		if m.adopt(ctx, sb) {
			m.sandboxes[rec.ID] = sb
			keep(id, rec.Slot)
		} else {
			orphans = append(orphans, dir)
		}
	}
	keepIDs = append(keepIDs, m.recoverBuilds(ctx)...)
	if m.cfg.SkipPrune {
		m.log.Info("recovery: host-wide prune skipped", "kept", len(keepIDs))
	} else {
		if err := m.net.Prune(ctx, keepSlots); err != nil {
			m.log.Error("recovery: network prune failed", "err", err)
		}
		if err := m.rt.Prune(ctx, keepIDs); err != nil {
			m.log.Error("recovery: runtime prune failed", "err", err)
		}
		if rt := m.cfg.BuildRuntime; rt != nil && rt != m.rt {
			if err := rt.Prune(ctx, keepIDs); err != nil {
				m.log.Error("recovery: build runtime prune failed", "err", err)
			}
		}
	}
	// After the runtime's prune, which unmounts what its sandboxes left.
	for _, dir := range orphans {
		if err := removeStateDir(dir); err != nil {
			m.log.Error("recovery: sandbox directory left behind", "dir", dir, "err", err)
		}
	}
	return nil
}

// adopt decides the fate of one recorded sandbox, whose slot is reserved:
// true means it is re-adopted (running, paused or in error), false that it
// was cleaned up.
func (m *Manager) adopt(ctx context.Context, sb *sandbox) bool {
	rec := sb.rec
	log := m.log.With("sandbox", rec.ID, "state", rec.State.String(), "slot", rec.Slot)
	if rec.State == StateStarting || rec.State == StateStopped || rec.Pooled {
		reason := "the previous agent stopped while it was " + rec.State.String()
		if rec.Pooled {
			reason = "a warm pool's, unclaimed (pools start empty)"
		}
		log.Info("recovery: removing sandbox", "reason", reason)
		// Adopted first so the runtime's Destroy knows what to remove.
		if _, err := m.rt.Recover(ctx, rec.Spec, rec.Driver); err != nil && !errGone(err) {
			log.Warn("recovery: runtime recover failed; its prune follows", "err", err)
		}
		m.discard(ctx, sb)
		return false
	}
	if rec.State == StatePaused && rec.Halted {
		// Nothing runs: its disk waits for Resume to boot it.
		if _, err := m.halter(); err == nil {
			log.Info("recovery: re-adopted sandbox paused without its memory")
			return true
		}
	}
	if rec.State == StatePaused && rec.Hibernated {
		// Nothing runs: the snapshot waits on disk for Resume. Recover
		// would restore it, spending the memory hibernation saved.
		if _, err := m.snapshotter(); err == nil {
			log.Info("recovery: re-adopted hibernated sandbox")
			return true
		}
		log.Error("recovery: keeping sandbox in error", "reason", "hibernated, and the "+m.rt.Name()+" runtime cannot restore snapshots")
		sb.rec.State, sb.rec.Error, sb.rec.StateChanged = StateError, "hibernated by another runtime than "+m.rt.Name(), m.cfg.Now()
		if err := writeRecord(sb.dir, sb.rec); err != nil {
			log.Error("recovery: sandbox record not saved", "err", err)
		}
		return true
	}
	inst, err := m.rt.Recover(ctx, rec.Spec, rec.Driver)
	switch {
	case errGone(err):
		log.Info("recovery: removing sandbox", "reason", "it no longer runs", "err", err)
		m.discard(ctx, sb)
		return false
	case err != nil:
		log.Error("recovery: keeping sandbox in error", "err", err)
		sb.rec.State, sb.rec.Error, sb.rec.StateChanged = StateError, fmt.Sprintf("recover: %v", err), m.cfg.Now()
	default:
		sb.rec.Envd, sb.rec.Pid, sb.rec.Driver = inst.Envd, inst.Pid, inst.State
		healthy := "not checked (paused)"
		if rec.State == StateRunning {
			healthy = "yes"
			if err := m.envd.waitHealthy(ctx, inst.Envd, recoverHealth); err != nil {
				healthy = "no: " + err.Error()
			}
		}
		log.Info("recovery: re-adopted sandbox", "envd", inst.Envd.String(), "pid", inst.Pid, "envd_healthy", healthy)
	}
	if err := writeRecord(sb.dir, sb.rec); err != nil {
		log.Error("recovery: sandbox record not saved", "err", err)
	}
	return true
}

// discard removes a recorded sandbox that will not be adopted: whatever
// the runtime still has of it, its network and slot. Its directory goes
// after the runtime's prune.
func (m *Manager) discard(ctx context.Context, sb *sandbox) {
	rec := sb.rec
	log := m.log.With("sandbox", rec.ID)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	if err := m.rt.Destroy(ctx, rec.key()); err != nil && !errGone(err) {
		log.Warn("recovery: runtime destroy failed; its prune follows", "err", err)
	}
	if err := m.net.Teardown(ctx, rec.key(), rec.Slot); err != nil {
		log.Warn("recovery: network teardown failed; its prune follows", "err", err)
	}
	m.net.Release(rec.Slot)
}
