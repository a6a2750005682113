package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/proxy"
	"roost.dev/roost/store"
)

// sandboxJSON is E2B's Sandbox: what create and connect return.
type sandboxJSON struct {
	SandboxID          string  `json:"sandboxID"`
	TemplateID         string  `json:"templateID"`
	Alias              string  `json:"alias,omitempty"`
	ClientID           string  `json:"clientID"`
	EnvdVersion        string  `json:"envdVersion"`
	EnvdAccessToken    *string `json:"envdAccessToken"`
	TrafficAccessToken *string `json:"trafficAccessToken"`
	Domain             string  `json:"domain"`
}

// listedJSON is E2B's ListedSandbox; GET /sandboxes/{id} adds the
// detail fields.
type listedJSON struct {
	SandboxID   string            `json:"sandboxID"`
	TemplateID  string            `json:"templateID"`
	Alias       string            `json:"alias,omitempty"`
	ClientID    string            `json:"clientID"`
	StartedAt   time.Time         `json:"startedAt"`
	EndAt       time.Time         `json:"endAt"`
	State       string            `json:"state"`
	CPUCount    int               `json:"cpuCount"`
	MemoryMB    int64             `json:"memoryMB"`
	DiskSizeMB  int64             `json:"diskSizeMB"`
	EnvdVersion string            `json:"envdVersion"`
	Metadata    map[string]string `json:"metadata"`
	Lifecycle   lifecycleJSON     `json:"lifecycle"`
}

// lifecycleJSON is E2B's SandboxLifecycle: what happens on timeout, and
// whether traffic resumes the sandbox while paused.
type lifecycleJSON struct {
	OnTimeout  string `json:"onTimeout"` // "pause" or "kill"
	AutoResume bool   `json:"autoResume"`
}

type detailJSON struct {
	listedJSON
	Domain          string  `json:"domain"`
	EnvdAccessToken *string `json:"envdAccessToken"`
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *Server) sandboxView(sb store.Sandbox) sandboxJSON {
	return sandboxJSON{
		SandboxID: sb.ID, TemplateID: sb.TemplateID, Alias: sb.Alias, ClientID: sb.ClientID,
		EnvdVersion: sb.EnvdVersion, EnvdAccessToken: optional(sb.EnvdAccessToken),
		TrafficAccessToken: optional(sb.TrafficAccessToken), Domain: s.cfg.Domain,
	}
}

func listedView(sb store.Sandbox) listedJSON {
	return listedJSON{
		SandboxID: sb.ID, TemplateID: sb.TemplateID, Alias: sb.Alias, ClientID: sb.ClientID,
		StartedAt: sb.StartedAt, EndAt: sb.EndAt, State: string(sb.State), CPUCount: sb.VCPUs,
		MemoryMB: sb.MemoryMB, DiskSizeMB: sb.DiskMB, EnvdVersion: sb.EnvdVersion, Metadata: sb.Metadata,
		Lifecycle: lifecycleView(sb),
	}
}

func lifecycleView(sb store.Sandbox) lifecycleJSON {
	l := lifecycleJSON{OnTimeout: "kill", AutoResume: sb.AutoResume}
	if sb.AutoPause {
		l.OnTimeout = "pause"
	}
	return l
}

// createSandbox is POST /v2/sandboxes and E2B's POST /sandboxes (the
// same body and answer). The record is stored (starting)
// before the agent is called, so a crash in between leaves a trace the
// reconciler finds, and deleted again when the agent refuses. Storing it
// is where the team's quota is checked (429 naming the limit): the
// record holds the sizes asked for, or the agent's defaults, from then on.
func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	p, err := parseCreate(r.Body)
	if err != nil {
		s.fail(w, r, "create sandbox", err)
		return
	}
	ctx := r.Context()
	if err := s.checkTimeout(ctx, key.TeamID, p.Timeout); err != nil {
		s.fail(w, r, "create sandbox", err)
		return
	}
	tmpl, err := s.createTemplateOf(ctx, key.TeamID, &p)
	if err != nil {
		s.fail(w, r, "create sandbox", err)
		return
	}
	mounts, host, err := s.placeVolumes(ctx, key.TeamID, p.Volumes)
	if err == nil && host.ID == "" {
		host, err = s.schedule(ctx)
	}
	if err != nil {
		s.fail(w, r, "create sandbox", err)
		return
	}
	now := s.store.Now()
	sb := store.Sandbox{
		ID: newSandboxID(), TeamID: key.TeamID, HostID: host.ID, TemplateID: tmpl.id, Alias: tmpl.alias, ClientID: host.ID,
		State: store.SandboxStarting, Metadata: p.Metadata, EnvVars: p.EnvVars, EnvdVersion: envdVersion,
		TrafficAccessToken: newToken(), AllowPublicTraffic: p.PublicTraffic, AllowInternet: p.AllowInternet,
		AutoPause: p.AutoPause, AutoResume: p.AutoResume, AutoPauseFilesystem: p.AutoPauseFilesystem,
		TimeoutSecs: int64(p.Timeout / time.Second), EndAt: now.Add(p.Timeout),
	}
	if p.Secure {
		sb.EnvdAccessToken = newToken()
	}
	reserve(&sb, p, host)
	noteTarget(r, sb.TeamID, sb.ID)
	if err := s.store.CreateSandboxWithin(ctx, sb, s.cfg.TeamQuota); err != nil {
		s.fail(w, r, "create sandbox", err)
		return
	}
	if err := s.attachVolumes(ctx, sb.ID, mounts); err != nil {
		s.fail(w, r, "create sandbox", err)
		return
	}
	log := s.log.With("sandbox", sb.ID, "host", host.ID)
	// The agent call and what follows must finish even if the client
	// goes: otherwise the sandbox runs with a record stuck in starting.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
	defer cancel()
	allowInternet := p.AllowInternet
	req := &hostagentv1.CreateSandboxRequest{
		SandboxId: sb.ID, Template: p.Template, Vcpus: p.VCPUs, MemoryMb: p.MemoryMB, DiskMb: p.DiskMB,
		TimeoutSeconds: sb.TimeoutSecs, EnvVars: p.EnvVars, Metadata: p.Metadata, AllowInternet: &allowInternet,
		EnvdAccessToken: sb.EnvdAccessToken, AutoPause: p.AutoPause, AutoPauseFilesystemOnly: p.AutoPauseFilesystem, TemplateRef: tmpl.ref,
		VolumeMounts: agentMounts(mounts), Owner: sb.TeamID,
	}
	resp, err := s.createOn(octx, &sb, host, req, len(mounts) == 0)
	if err != nil {
		err = errdefs.FromConnect("agent create sandbox", err)
		if errors.Is(err, errdefs.ErrNotFound) {
			err = fmt.Errorf("template %q not found: %w", p.Template, err)
		}
		if derr := s.store.DeleteSandbox(octx, sb.ID); derr != nil {
			log.Error("delete failed sandbox record", "err", derr)
		}
		s.fail(w, r, "create sandbox", err)
		return
	}
	got := resp.Msg.GetSandbox()
	started := store.Started{VCPUs: int(got.GetLimits().GetVcpus()), MemoryMB: int64(got.GetLimits().GetMemoryMb()),
		DiskMB: int64(got.GetLimits().GetDiskMb())}
	if ts := got.GetStartedAt(); ts != nil {
		started.At = ts.AsTime().UTC()
	}
	sb, err = s.store.SandboxStarted(octx, sb.ID, started)
	if err != nil {
		s.fail(w, r, "create sandbox", err)
		return
	}
	s.emit(sb, store.EventCreated, reasonAPI)
	log.Info("sandbox created", "template", p.Template, "timeout", p.Timeout)
	writeJSON(w, http.StatusCreated, s.sandboxView(sb))
}

// createAttempts is how many hosts a create tries when hosts cannot be
// reached at all.
const createAttempts = 3

// createOn has host's agent create sb. When the agent cannot be reached
// at all (the request never left: a dead or cut-off host the reconciler
// has not marked down yet), the host is avoided for a while and, if sb
// may move (no volumes tie it to the host), its starting record moves to
// another host, which is asked instead, up to createAttempts hosts. sb
// is updated to the host that answered.
func (s *Server) createOn(ctx context.Context, sb *store.Sandbox, host store.Host, req *hostagentv1.CreateSandboxRequest, mayMove bool) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	for attempt := 1; ; attempt++ {
		resp, err := s.agents.For(host).CreateSandbox(ctx, connect.NewRequest(req))
		var dial *proxy.DialError
		if err == nil || !errors.As(err, &dial) {
			return resp, err
		}
		s.avoid.mark(host.ID)
		if !mayMove || attempt == createAttempts {
			return nil, err
		}
		next, serr := s.schedule(ctx)
		if serr != nil || next.ID == host.ID {
			return nil, err
		}
		moved, uerr := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
			if cur.State != store.SandboxStarting {
				return fmt.Errorf("sandbox %s became %s while starting: %w", cur.ID, cur.State, errdefs.ErrConflict)
			}
			cur.HostID, cur.ClientID = next.ID, next.ID
			return nil
		})
		if uerr != nil {
			return nil, errors.Join(err, uerr)
		}
		s.log.Warn("host unreachable; creating the sandbox on another", "sandbox", sb.ID, "host", host.ID, "next", next.ID, "err", err)
		*sb, host = moved, next
	}
}

// createTemplate is what a create starts from.
type createTemplate struct {
	id, alias string                   // the sandbox's TemplateID and Alias
	ref       *hostagentv1.TemplateRef // nil: the hosts' own tree named id
}

// createTemplateOf resolves the template a create names: a content
// template the team may use (its sizes filling in those p leaves zero),
// else a host's own tree of that name.
func (s *Server) createTemplateOf(ctx context.Context, teamID string, p *createParams) (createTemplate, error) {
	c, err := s.resolveContent(ctx, teamID, p.Template)
	switch {
	case !s.builtin(p.Template):
	case err == nil:
		s.refreshBuiltin(ctx, c)
	case errors.Is(err, errNotContent) || errors.Is(err, errdefs.ErrInvalid) || errors.Is(err, errdefs.ErrNotFound):
		c, err = s.awaitBuiltin(ctx, teamID, p.Template)
	}
	if errors.Is(err, errNotContent) {
		return createTemplate{id: p.Template}, nil
	}
	if err != nil {
		return createTemplate{}, err
	}
	if p.VCPUs == 0 {
		p.VCPUs = int32(min(c.Build.CPUs, maxVCPUs))
	}
	if p.MemoryMB == 0 {
		p.MemoryMB = int32(min(c.Build.MemoryMB, maxMemoryMB))
	}
	return createTemplate{
		id: c.Template.ID, alias: c.Template.Name,
		ref: &hostagentv1.TemplateRef{Digest: string(c.Digest), Manifest: c.Manifest},
	}, nil
}

// activeStates are the states that hold a slot on a host.
var activeStates = []store.SandboxState{store.SandboxStarting, store.SandboxRunning, store.SandboxPaused}

// activeSandboxes counts the host's sandboxes that hold a slot, in the
// store (an indexed count: no record is read).
func (s *Server) activeSandboxes(ctx context.Context, hostID string) (int, error) {
	n, err := s.store.CountSandboxes(ctx, store.SandboxFilter{HostID: hostID, States: activeStates})
	if err != nil {
		return 0, fmt.Errorf("count sandboxes of host %s: %w", hostID, err)
	}
	return n, nil
}

// eachPage calls fn with every page of the sandboxes f selects, from
// f.NextToken on, in pages of the largest size.
func (s *Server) eachPage(ctx context.Context, f store.SandboxFilter, fn func([]store.Sandbox)) error {
	f.Limit = store.MaxPageSize
	for {
		page, next, err := s.store.ListSandboxes(ctx, f)
		if err != nil {
			return err
		}
		fn(page)
		if next == "" {
			return nil
		}
		f.NextToken = next
	}
}

// listSandboxes is GET /v2/sandboxes: one page, newest first by
// default. E2B orders by start time; roost orders by creation, the
// record's fixed position (a start time is set once, when the create
// returns, and creates racing each other may finish out of order), so a
// page token stays valid across pauses and resumes.
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q, err := parseListQuery(r.URL.Query())
	if err != nil {
		s.fail(w, r, "list sandboxes", err)
		return
	}
	f := store.SandboxFilter{
		TeamID: key.TeamID, States: q.States, Metadata: q.Metadata, StartedAfter: q.StartedAfter,
		Template: q.Template, Order: q.Order, Limit: q.Limit, NextToken: q.NextToken,
	}
	page, next, err := s.store.ListSandboxes(r.Context(), f)
	if err != nil {
		s.fail(w, r, "list sandboxes", err)
		return
	}
	if slices.Contains(q.States, store.SandboxRunning) {
		// E2B's X-Total-Running: the running sandboxes of every page.
		f.States = []store.SandboxState{store.SandboxRunning}
		n, err := s.store.CountSandboxes(r.Context(), f)
		if err != nil {
			s.fail(w, r, "list sandboxes", err)
			return
		}
		w.Header().Set("X-Total-Running", strconv.Itoa(n))
	}
	if next != "" {
		w.Header().Set("X-Next-Token", next)
	}
	writeJSON(w, http.StatusOK, appendListed(make([]listedJSON, 0, len(page)), page))
}

// appendListed appends the list entries of sbs to out.
func appendListed(out []listedJSON, sbs []store.Sandbox) []listedJSON {
	for _, sb := range sbs {
		out = append(out, listedView(sb))
	}
	return out
}

// teamSandbox loads the path's sandbox of the caller's team; another
// team's is not found.
func (s *Server) teamSandbox(r *http.Request, key store.APIKey) (store.Sandbox, error) {
	id := r.PathValue("id")
	sb, err := s.store.GetSandbox(r.Context(), key.TeamID, id)
	if errors.Is(err, errdefs.ErrNotFound) {
		return store.Sandbox{}, fmt.Errorf("sandbox %q not found: %w", id, errdefs.ErrNotFound)
	}
	return sb, err
}

// getSandbox is GET /sandboxes/{id}.
func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	sb, err := s.teamSandbox(r, key)
	if err != nil {
		s.fail(w, r, "get sandbox", err)
		return
	}
	writeJSON(w, http.StatusOK, detailJSON{listedJSON: listedView(sb), Domain: s.cfg.Domain,
		EnvdAccessToken: optional(sb.EnvdAccessToken)})
}

// hostOf returns the sandbox's host and its agent client.
func (s *Server) hostOf(ctx context.Context, sb store.Sandbox) (store.Host, error) {
	h, err := s.store.GetHost(ctx, sb.HostID)
	if err != nil {
		return store.Host{}, fmt.Errorf("host %s of sandbox %s: %v: %w", sb.HostID, sb.ID, err, errdefs.ErrUnavailable)
	}
	return h, nil
}

// agentHost is hostOf for a call that needs only the host's address,
// from scheduling's view of the hosts: at most hostsViewTTL old, and
// read again when a host registers or changes state. A destroy (one for
// every timeout) then needs no store read of its own.
func (s *Server) agentHost(ctx context.Context, sb store.Sandbox) (store.Host, error) {
	h, ok, err := s.hosts.host(ctx, s.store, sb.HostID)
	if err == nil && !ok {
		h, err = s.store.GetHost(ctx, sb.HostID)
	}
	if err != nil {
		return store.Host{}, fmt.Errorf("host %s of sandbox %s: %v: %w", sb.HostID, sb.ID, err, errdefs.ErrUnavailable)
	}
	return h, nil
}

// opContext detaches an agent operation from its request, bounded: once
// the agent is asked to act, the store must learn the outcome.
func opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), rpcTimeout)
}

// deleteSandbox is DELETE /sandboxes/{id}.
func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	sb, err := s.teamSandbox(r, key)
	if err != nil {
		s.fail(w, r, "delete sandbox", err)
		return
	}
	ctx, cancel := opContext(r.Context())
	defer cancel()
	if err := s.destroy(ctx, sb, reasonAPI); err != nil {
		s.fail(w, r, "delete sandbox", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// destroy destroys a sandbox on its agent (one the agent no longer has is
// fine), deletes its record and emits its killed event for reason; sb is
// the record as it was before the kill was decided. A lost sandbox's
// record goes whatever its host answers: see destroyLost.
func (s *Server) destroy(ctx context.Context, sb store.Sandbox, reason string) error {
	if err := s.destroyOnHost(ctx, sb); err != nil {
		return err
	}
	if err := s.store.DeleteSandbox(ctx, sb.ID); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("delete sandbox %s: %w", sb.ID, err)
	}
	s.destroyed(reason, sb)
	return nil
}

// destroyOnHost is destroy's first half: the sandbox destroyed on its
// agent (see destroy).
func (s *Server) destroyOnHost(ctx context.Context, sb store.Sandbox) error {
	s.proxy.Evict(sb.ID) // here at once; the other replicas once the record is gone
	if sb.State == store.SandboxLost {
		s.destroyLost(ctx, sb)
		return nil
	}
	h, err := s.agentHost(ctx, sb)
	if err != nil {
		return err
	}
	_, err = s.agents.For(h).DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: sb.ID}))
	if err = errdefs.FromConnect("agent destroy sandbox", err); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return nil
}

// destroyed is destroy's last step, once the records of sbs are
// deleted: the other replicas told (one notice), and each sandbox's
// killed event emitted.
func (s *Server) destroyed(reason string, sbs ...store.Sandbox) {
	ids := make([]string, len(sbs))
	for i, sb := range sbs {
		ids[i] = sb.ID
	}
	s.evict(ids...)
	for _, sb := range sbs {
		s.emit(sb, store.EventKilled, reason)
		s.log.Info("sandbox destroyed", "sandbox", sb.ID, "host", sb.HostID, "reason", reason)
	}
}

// lostDestroyTimeout bounds the try to reach a lost sandbox's host: it is
// likely down, and the reconciler finishes the job when it is not.
const lostDestroyTimeout = 10 * time.Second

// destroyLost tells a lost sandbox's host to destroy it, if the host
// answers now. When it does not, the sandbox may still run there
// (partitioned, not dead): the reconciler destroys it once the host
// answers again, as anything a host runs with no live record, so the
// client's delete never waits on a host that may not come back.
func (s *Server) destroyLost(ctx context.Context, sb store.Sandbox) {
	log := s.log.With("sandbox", sb.ID, "host", sb.HostID)
	h, err := s.store.GetHost(ctx, sb.HostID)
	if err != nil {
		log.Warn("lost sandbox's host not found; nothing to tell", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, lostDestroyTimeout)
	defer cancel()
	_, err = s.agents.For(h).DestroySandbox(ctx, connect.NewRequest(&hostagentv1.DestroySandboxRequest{SandboxId: sb.ID}))
	switch err = errdefs.FromConnect("agent destroy sandbox", err); {
	case err == nil:
		log.Info("lost sandbox destroyed on its host")
	case errors.Is(err, errdefs.ErrNotFound):
		log.Info("lost sandbox already gone from its host")
	default:
		log.Warn("lost sandbox's host not reached; the reconciler destroys it when the host answers", "err", err)
	}
}

// usableSandbox loads the path's sandbox of the caller's team and
// refuses it unless usable.
func (s *Server) usableSandbox(r *http.Request, key store.APIKey) (store.Sandbox, error) {
	sb, err := s.teamSandbox(r, key)
	if err != nil {
		return store.Sandbox{}, err
	}
	return sb, usable(sb)
}

// usable refuses sandboxes the API cannot act on.
func usable(sb store.Sandbox) error {
	switch sb.State {
	case store.SandboxRunning, store.SandboxPaused:
		return nil
	}
	return fmt.Errorf("sandbox %s is %s: %w", sb.ID, sb.State, errdefs.ErrConflict)
}

// setTimeout is POST /sandboxes/{id}/timeout: the running sandbox now
// ends timeout seconds from now; 0 ends it now (its timeout action, kill
// or pause, runs on the agent's next reaper round). A paused sandbox is
// 404, as E2B answers.
func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	d, err := parseSetTimeout(r.Body)
	if err != nil {
		s.fail(w, r, "set timeout", err)
		return
	}
	sb, err := s.teamSandbox(r, key)
	if err == nil && sb.State != store.SandboxRunning {
		// E2B's answer, which its SDKs before JS 2.6 rely on: their
		// connect sets the timeout and resumes when that is 404.
		err = fmt.Errorf("sandbox %s is %s, not running: %w", sb.ID, sb.State, errdefs.ErrNotFound)
	}
	if err != nil {
		s.fail(w, r, "set timeout", err)
		return
	}
	ctx, cancel := opContext(r.Context())
	defer cancel()
	if err := s.extend(ctx, sb, d, true); err != nil {
		s.fail(w, r, "set timeout", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// extend moves the sandbox's end to now+d on the agent and in the store;
// unless exact, an end already later is kept. A d longer than the team's
// timeout limit is refused.
func (s *Server) extend(ctx context.Context, sb store.Sandbox, d time.Duration, exact bool) error {
	if err := s.checkTimeout(ctx, sb.TeamID, d); err != nil {
		return err
	}
	end := s.store.Now().Add(d)
	if !exact && sb.EndAt.After(end) {
		return nil
	}
	h, err := s.hostOf(ctx, sb)
	if err != nil {
		return err
	}
	resp, err := s.agents.For(h).SetTimeout(ctx, connect.NewRequest(&hostagentv1.SetTimeoutRequest{
		SandboxId: sb.ID, TimeoutSeconds: int64(d / time.Second)}))
	if err != nil {
		return errdefs.FromConnect("agent set timeout", err)
	}
	pausedOnHost := sb.State == store.SandboxRunning && resp.Msg.GetSandbox().GetState() == hostagentv1.SandboxState_SANDBOX_STATE_PAUSED
	rec, err := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
		cur.EndAt = end
		if pausedOnHost && cur.State == store.SandboxRunning {
			// Its agent paused it on timeout before this server did.
			cur.State = store.SandboxPaused
		}
		return nil
	})
	if err == nil && pausedOnHost {
		s.evict(sb.ID)
		s.emit(rec, store.EventPaused, reasonTimeout)
		return fmt.Errorf("sandbox %s: %w", sb.ID, errPausedOnHost)
	}
	if err != nil {
		return fmt.Errorf("set timeout of sandbox %s: %w", sb.ID, err)
	}
	s.emit(rec, store.EventUpdated, reasonAPI)
	return nil
}

// errPausedOnHost is extend's answer for a sandbox the store has running
// and its agent has paused (on timeout, before this server's own timeout
// pass): it is recorded paused, and is not running (404, E2B's answer to
// a timeout or refresh of a paused sandbox; connect resumes it).
var errPausedOnHost = fmt.Errorf("paused on its host, not running: %w", errdefs.ErrNotFound)

// pauseSandbox is POST /sandboxes/{id}/pause: 409 when already paused,
// 429 when the team keeps as many paused sandboxes as its quota allows.
// With {"memory": false} (E2B's keepMemory: false) the sandbox's
// processes end and its filesystem stays: connect or resume boots it
// afresh, traffic does not.
func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	keepMemory, err := parsePause(r.Body)
	var sb store.Sandbox
	if err == nil {
		sb, err = s.teamSandbox(r, key)
	}
	if err == nil && sb.State == store.SandboxPaused {
		err = fmt.Errorf("sandbox %s is already paused: %w", sb.ID, errdefs.ErrConflict)
	}
	if err == nil {
		err = usable(sb)
	}
	if err == nil {
		err = s.checkPauseRoom(r.Context(), sb.TeamID)
	}
	if err != nil {
		s.fail(w, r, "pause sandbox", err)
		return
	}
	ctx, cancel := opContext(r.Context())
	defer cancel()
	if err := s.pause(ctx, sb, keepMemory, reasonAPI); err != nil {
		s.fail(w, r, "pause sandbox", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// parsePause decodes E2B's SandboxPauseRequest: memory (default true)
// says whether the sandbox's memory is kept.
func parsePause(body io.Reader) (keepMemory bool, err error) {
	var req struct {
		Memory *bool `json:"memory"`
	}
	if err := decodeJSON(body, &req); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return req.Memory == nil || *req.Memory, nil
}

// pause pauses a running sandbox on its agent and records it paused:
// with its memory, hibernated where the runtime can (frozen in place
// where it cannot), or without (its files kept, resume boots it afresh).
// An agent that reports it already paused (its own reaper paused it) is
// success. The paused event says reason.
func (s *Server) pause(ctx context.Context, sb store.Sandbox, keepMemory bool, reason string) error {
	h, err := s.hostOf(ctx, sb)
	if err != nil {
		return err
	}
	_, err = s.agents.For(h).PauseSandbox(ctx, connect.NewRequest(&hostagentv1.PauseSandboxRequest{
		SandboxId: sb.ID, FilesystemOnly: !keepMemory, PreferHibernate: keepMemory,
	}))
	if err = errdefs.FromConnect("agent pause sandbox", err); err != nil && !errors.Is(err, errdefs.ErrConflict) {
		return err
	}
	if err != nil { // failed_precondition: make sure it is paused, not gone
		g, gerr := s.agents.For(h).GetSandbox(ctx, connect.NewRequest(&hostagentv1.GetSandboxRequest{SandboxId: sb.ID}))
		if gerr != nil {
			return errdefs.FromConnect("agent get sandbox", gerr)
		}
		if g.Msg.GetSandbox().GetState() != hostagentv1.SandboxState_SANDBOX_STATE_PAUSED {
			return err
		}
	}
	s.proxy.Evict(sb.ID) // here at once; the other replicas once the record says paused
	rec, err := s.store.UpdateSandbox(ctx, sb.ID, func(cur *store.Sandbox) error {
		cur.State = store.SandboxPaused
		return nil
	})
	s.evict(sb.ID)
	if err != nil {
		return fmt.Errorf("record sandbox %s paused: %w", sb.ID, err)
	}
	s.emit(rec, store.EventPaused, reason)
	s.log.Info("sandbox paused", "sandbox", sb.ID)
	return nil
}

// connectSandbox is POST /v2/sandboxes/{id}/connect and E2B's
// unversioned POST /sandboxes/{id}/connect: a running sandbox's
// timeout is extended (200); a paused one is resumed (201).
func (s *Server) connectSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	sb, err := s.usableSandbox(r, key)
	if err != nil {
		s.fail(w, r, "connect sandbox", err)
		return
	}
	d, err := parseTimeoutBody(r.Body, time.Duration(sb.TimeoutSecs)*time.Second)
	if err != nil {
		s.fail(w, r, "connect sandbox", err)
		return
	}
	if sb.State == store.SandboxRunning {
		ctx, cancel := opContext(r.Context())
		defer cancel()
		err := s.extend(ctx, sb, d, false)
		if err == nil {
			writeJSON(w, http.StatusOK, s.sandboxView(sb))
			return
		}
		if !errors.Is(err, errPausedOnHost) {
			s.fail(w, r, "connect sandbox", err)
			return
		}
		// Paused by its agent's timeout a moment ago: connect resumes it.
		sb.State = store.SandboxPaused
	}
	s.resumeAnswer(w, r, "connect sandbox", sb, d)
}

// resumeAnswer resumes a paused sandbox for d and answers 201 with it:
// the end of connect and of E2B's legacy resume.
func (s *Server) resumeAnswer(w http.ResponseWriter, r *http.Request, op string, sb store.Sandbox, d time.Duration) {
	ctx, cancel := opContext(r.Context())
	defer cancel()
	sb, err := s.resume(ctx, sb, d, false)
	if err != nil {
		s.fail(w, r, op, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.sandboxView(sb))
}

// resume resumes a paused sandbox on its agent for d and records it
// running. Connect and the proxy's auto-resume both come here. The
// record turns running, within the team's quota, before the agent is
// asked (resumes racing for the last slot cannot both get it), and back
// to paused if the agent fails.
func (s *Server) resume(ctx context.Context, sb store.Sandbox, d time.Duration, auto bool) (store.Sandbox, error) {
	if err := s.checkTimeout(ctx, sb.TeamID, d); err != nil {
		return store.Sandbox{}, err
	}
	h, err := s.hostOf(ctx, sb)
	if err != nil {
		return store.Sandbox{}, err
	}
	held, err := s.store.UpdateSandboxWithin(ctx, sb.ID, s.cfg.TeamQuota, func(cur *store.Sandbox) error {
		if cur.State != store.SandboxPaused {
			return fmt.Errorf("sandbox %s is %s, not paused: %w", cur.ID, cur.State, errdefs.ErrConflict)
		}
		cur.State = store.SandboxRunning
		cur.EndAt = s.store.Now().Add(d)
		return nil
	})
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("resume sandbox %s: %w", sb.ID, err)
	}
	secs := int64(d / time.Second)
	if _, err := s.agents.For(h).ResumeSandbox(ctx, connect.NewRequest(&hostagentv1.ResumeSandboxRequest{
		SandboxId: sb.ID, TimeoutSeconds: &secs, Auto: auto})); err != nil {
		s.unholdResume(ctx, held)
		return store.Sandbox{}, errdefs.FromConnect("agent resume sandbox", err)
	}
	id := sb.ID
	sb, err = s.store.UpdateSandbox(ctx, id, func(cur *store.Sandbox) error {
		cur.State = store.SandboxRunning
		cur.EndAt = s.store.Now().Add(d)
		return nil
	})
	s.evict(id)
	if err != nil {
		return store.Sandbox{}, fmt.Errorf("record sandbox %s resumed: %w", id, err)
	}
	reason := reasonAPI
	if auto {
		reason = reasonAutoResume
	}
	s.emit(sb, store.EventResumed, reason)
	s.log.Info("sandbox resumed", "sandbox", id)
	return sb, nil
}

// unholdResume puts back to paused a record resume marked running, when
// the agent did not resume it and nothing changed it since.
func (s *Server) unholdResume(ctx context.Context, held store.Sandbox) {
	_, err := s.store.UpdateSandbox(ctx, held.ID, func(cur *store.Sandbox) error {
		if cur.State != store.SandboxRunning || !cur.UpdatedAt.Equal(held.UpdatedAt) {
			return errSkip
		}
		cur.State = store.SandboxPaused
		return nil
	})
	if err != nil && !errors.Is(err, errSkip) {
		s.log.Warn("record failed resume", "sandbox", held.ID, "err", err)
	}
}

// autoResume is the proxy's AutoResume: traffic reached a paused sandbox
// created with autoResume. It resumes for the sandbox's own timeout, as
// E2B does. The proxy calls it once at a time per sandbox, on a bounded
// context of its own.
func (s *Server) autoResume(ctx context.Context, id string) error {
	sb, err := s.store.LookupSandbox(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case sb.State == store.SandboxRunning:
		return nil // resumed meanwhile, by connect
	case sb.State != store.SandboxPaused:
		return fmt.Errorf("sandbox %s is %s: %w", id, sb.State, errdefs.ErrConflict)
	case !sb.AutoResume:
		return fmt.Errorf("sandbox %s is paused without auto-resume: %w", id, errdefs.ErrConflict)
	}
	d := time.Duration(sb.TimeoutSecs) * time.Second
	if d <= 0 {
		d = defaultTimeout
	}
	// Traffic cannot be told its timeout is too long: a team whose limit
	// was lowered since the create gets the limit.
	if q, err := s.teamQuota(ctx, sb.TeamID); err == nil {
		if max, ok := q.Timeout(); ok {
			d = min(d, max)
		}
	}
	_, err = s.resume(ctx, sb, d, true)
	return err
}
