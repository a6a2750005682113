package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/runtime"
	"roost.dev/roost/store"
)

// snapshotTimeout bounds a snapshot: the agent pauses the sandbox, then
// writes its memory to disk, which under emulation takes seconds per
// hundred MiB (the agent allows itself 3 minutes for that part).
const snapshotTimeout = 4 * time.Minute

// hibernatedTimeout bounds asking a sandbox's agent whether it is
// hibernated, for GET: a slow host leaves the answer unknown.
const hibernatedTimeout = 5 * time.Second

// v1SandboxJSON is a sandbox on roost's own API: E2B's SandboxDetail plus
// what backs it. E2B's endpoints never answer with it.
type v1SandboxJSON struct {
	detailJSON
	// Runtime is the runtime of the sandbox's host ("namespace", "qemu");
	// empty when the host is unknown.
	Runtime string `json:"runtime"`
	// Capabilities are what that runtime can do; null when the host did
	// not report them.
	Capabilities *runtime.Capabilities `json:"capabilities"`
	// Hibernated is true when the sandbox is paused with its memory on
	// disk and no process; null when its host could not be asked.
	Hibernated *bool `json:"hibernated"`
	// Paused says how a paused sandbox is kept: "frozen" (its processes
	// stopped in memory), "hibernated" (its memory on disk) or
	// "filesystem" (its processes ended, its files kept: resume boots it
	// afresh); empty when not paused or its host could not be asked.
	Paused string `json:"paused,omitempty"`
	// PauseNote says why a paused sandbox is frozen rather than
	// hibernated (its runtime could not snapshot it).
	PauseNote string `json:"pauseNote,omitempty"`
	// DiskBytes is what the sandbox holds on its host's disk (what it
	// wrote over its template, its memory while hibernated); null when
	// its host could not be asked.
	DiskBytes *int64 `json:"diskBytes"`
}

// hostCapabilities decodes a host's stored capabilities; ok is false when
// the host did not report them (a registered agent may not).
func hostCapabilities(h store.Host) (runtime.Capabilities, bool) {
	var c runtime.Capabilities
	if len(h.Capabilities) == 0 || json.Unmarshal(h.Capabilities, &c) != nil {
		return runtime.Capabilities{}, false
	}
	return c, true
}

// v1View is sb's v1 detail on host h (zero when the host is unknown),
// with what its agent says of it (nil when it was not asked).
func (s *Server) v1View(sb store.Sandbox, h store.Host, got *hostagentv1.Sandbox) v1SandboxJSON {
	v := v1SandboxJSON{
		detailJSON: detailJSON{listedJSON: listedView(sb), Domain: s.cfg.Domain, EnvdAccessToken: optional(sb.EnvdAccessToken)},
		Runtime:    h.Runtime,
	}
	if c, ok := hostCapabilities(h); ok {
		v.Capabilities = &c
	}
	if got != nil {
		hibernated, disk := got.GetHibernated(), got.GetDiskBytes()
		v.Hibernated, v.DiskBytes = &hibernated, &disk
		if got.GetState() == hostagentv1.SandboxState_SANDBOX_STATE_PAUSED {
			v.Paused, v.PauseNote = pauseKind(got), got.GetPauseNote()
		}
	}
	return v
}

// pauseKind names how a paused sandbox is kept (v1SandboxJSON.Paused).
func pauseKind(sb *hostagentv1.Sandbox) string {
	switch {
	case sb.GetHibernated():
		return "hibernated"
	case sb.GetHalted():
		return "filesystem"
	}
	return "frozen"
}

// getSandboxV1 is GET /v1/sandboxes/{id}: E2B's detail, plus the runtime
// that backs the sandbox, its capabilities, and what its agent says:
// whether and how it is paused, and the disk it holds.
func (s *Server) getSandboxV1(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	sb, err := s.teamSandbox(r, key)
	if err != nil {
		s.fail(w, r, "get sandbox", err)
		return
	}
	h, err := s.hostOf(r.Context(), sb)
	if err != nil {
		// The record is what GET shows; its host's facts are extras.
		s.log.Warn("sandbox host unknown", "sandbox", sb.ID, "host", sb.HostID, "err", err)
		h = store.Host{}
	}
	var got *hostagentv1.Sandbox
	if h.ID != "" && h.State != store.HostDown && sb.State != store.SandboxStopped {
		ctx, cancel := context.WithTimeout(r.Context(), hibernatedTimeout)
		resp, err := s.agents.For(h).GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{SandboxId: sb.ID}))
		cancel()
		if err == nil {
			got = resp.Msg.GetSandbox()
		} else if r.Context().Err() == nil {
			s.log.Warn("ask agent about sandbox", "sandbox", sb.ID, "host", h.ID, "err", errdefs.FromConnect("agent get sandbox", err))
		}
	}
	writeJSON(w, http.StatusOK, s.v1View(sb, h, got))
}

// snapshotSandbox is POST /v1/sandboxes/{id}/snapshot: the sandbox, running
// or paused, is hibernated (memory and device state to disk, its process
// ended) and recorded paused, so E2B's connect, or traffic when it
// auto-resumes, restores it. A sandbox hibernated already is success
// (the call is idempotent). A runtime that cannot snapshot is 409, checked
// from the host's reported capabilities before the agent is called.
func (s *Server) snapshotSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	sb, err := s.teamSandbox(r, key)
	if err == nil {
		err = usable(sb)
	}
	var h store.Host
	if err == nil {
		h, err = s.hostOf(r.Context(), sb)
	}
	if err == nil {
		if c, ok := hostCapabilities(h); ok && !c.Snapshot {
			err = cannotSnapshot(sb.ID, h.Runtime, &c)
		}
	}
	if err != nil {
		s.fail(w, r, "snapshot sandbox", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), snapshotTimeout)
	defer cancel()
	if sb, err = s.hibernate(ctx, sb, h); err != nil {
		s.fail(w, r, "snapshot sandbox", err)
		return
	}
	writeJSON(w, http.StatusOK, s.v1View(sb, h, &hostagentv1.Sandbox{State: hostagentv1.SandboxState_SANDBOX_STATE_PAUSED, Hibernated: true}))
}

// cannotSnapshot is the refusal for a sandbox whose runtime has no
// snapshot: a conflict with what backs the sandbox (409), not a missing
// feature of the API. caps is nil when the host did not report them.
func cannotSnapshot(id, rt string, caps *runtime.Capabilities) error {
	if rt == "" {
		rt = "host's"
	}
	can := ""
	switch {
	case caps == nil:
	case caps.Pause:
		can = " (it can pause)"
	default:
		can = " (nor pause)"
	}
	return fmt.Errorf("sandbox %s runs on the %s runtime, which cannot snapshot%s: %w", id, rt, can, errdefs.ErrConflict)
}

// hibernate has the agent hibernate sb and records it paused. An agent
// that cannot snapshot is cannotSnapshot; one that reports the sandbox
// hibernated already is success.
func (s *Server) hibernate(ctx context.Context, sb store.Sandbox, h store.Host) (store.Sandbox, error) {
	agent := s.agents.For(h)
	_, err := agent.PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{SandboxId: sb.ID, Hibernate: true}))
	err = errdefs.FromConnect("agent hibernate sandbox", err)
	switch {
	case errors.Is(err, errdefs.ErrUnsupported):
		var caps *runtime.Capabilities
		if c, ok := hostCapabilities(h); ok {
			caps = &c
		}
		s.log.Debug("agent cannot snapshot", "sandbox", sb.ID, "host", h.ID, "err", err)
		if caps != nil && caps.Snapshot {
			// The runtime can, this sandbox it cannot (CRIU refused a
			// process of it): the agent's reason, as it was.
			return store.Sandbox{}, fmt.Errorf("sandbox %s cannot be hibernated, and is as it was: %v: %w", sb.ID, err, errdefs.ErrConflict)
		}
		return store.Sandbox{}, cannotSnapshot(sb.ID, h.Runtime, caps)
	case errors.Is(err, errdefs.ErrConflict):
		// failed_precondition: hibernated already is what was asked for;
		// anything else (stopping, failed) is the agent's refusal.
		g, gerr := agent.GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{SandboxId: sb.ID}))
		if gerr != nil || !g.Msg.GetSandbox().GetHibernated() {
			return store.Sandbox{}, err
		}
	case err != nil:
		return store.Sandbox{}, err
	}
	s.proxy.Evict(sb.ID) // here at once; the other replicas once the record says paused
	id := sb.ID
	sb, err = s.store.UpdateSandbox(ctx, id, func(cur *store.Sandbox) error {
		if cur.State != store.SandboxRunning && cur.State != store.SandboxPaused {
			return fmt.Errorf("sandbox %s became %s while hibernating: %w", cur.ID, cur.State, errdefs.ErrConflict)
		}
		cur.State = store.SandboxPaused
		return nil
	})
	s.evict(id)
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("record sandbox %s hibernated: %w", id, err)
	}
	s.emit(sb, store.EventPaused, "hibernate")
	s.log.Info("sandbox hibernated", "sandbox", id, "host", h.ID)
	return sb, nil
}
