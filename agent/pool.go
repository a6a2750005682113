package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
)

// Warm pools: for each template named in Config.WarmPools, and each
// resource shape creates of it ask for, the manager keeps sandboxes
// started ahead of time (network, disk, processes, envd healthy) with no
// identity: they have no ID of their own yet, no env vars, tokens or
// metadata, took no /init, and no list, quota or reaper sees them. A
// create that matches a pool claims one of its sandboxes and gives it its
// identity in one step (claim); the filler (poolfill.go) then starts
// another in the background.
//
// A pool learns what to start from the first create of its template and
// shape (the request less its identity), so a control plane's template
// needs no configuration beyond its name. A create that names another
// version of the template (a rebuild: another tree) drains the pools of
// the old one.

// Defaults and bounds of the warm pools.
const (
	// DefaultWarmPoolMemoryMB is the default of Config.WarmPoolMemoryMB.
	DefaultWarmPoolMemoryMB = 1024
	// demandWindow is how far back a pool counts the creates that asked
	// for it: its size follows the creates of the last demandWindow.
	demandWindow = 10 * time.Second
	// maxPoolGrowth bounds how far demand grows a pool: to this many
	// times its configured size (or maxPoolGrowth sandboxes for a shape
	// with none configured).
	maxPoolGrowth = 4
)

// poolKey says which creates a pooled sandbox can serve: those of one
// version of one template, with one shape.
type poolKey struct {
	template string // the template's name, as creates give it
	tree     string // the tree of the control plane's template; "" for a host template
	limits   runtime.Limits
}

// pool is the warm sandboxes of one key. Its fields are guarded by
// pools.mu.
type pool struct {
	key poolKey
	// recipe is the create that starts a sandbox of the pool: the first
	// create of the key, less its identity.
	recipe CreateRequest
	// floor is the size the pool keeps whatever the demand.
	floor int
	// ready are the started sandboxes, oldest first; tpl is what each
	// was started from (its default user and workdir go into /init).
	ready []pooled
	// starting counts the fills in flight.
	starting int
	// asked holds when creates asked for the key, within demandWindow.
	asked []time.Time
	// failedAt is when a fill last failed: the next waits fillRetry.
	failedAt time.Time
	// aboveSince is when the pool grew past its target, if it is.
	aboveSince time.Time
}

// pooled is one warm sandbox.
type pooled struct {
	sb  *sandbox
	tpl template.Template
	// memory is what its cgroup used when last read (bytes; 0 unread).
	memory int64
}

// pools are the manager's warm pools.
type pools struct {
	m        *Manager
	sizes    map[string]int // the configured floor, by template name
	budgetMB int64
	wake     chan struct{} // a claim or a finished fill: look again

	mu     sync.Mutex // guards byKey and the pools in it
	byKey  map[poolKey]*pool
	claims map[bool]int64 // creates served from a pool (true) or not (false)
}

func newPools(m *Manager, sizes map[string]int, budgetMB int64) *pools {
	if budgetMB <= 0 {
		budgetMB = DefaultWarmPoolMemoryMB
	}
	return &pools{
		m: m, sizes: maps.Clone(sizes), budgetMB: budgetMB, wake: make(chan struct{}, 1),
		byKey: map[poolKey]*pool{}, claims: map[bool]int64{},
	}
}

// poolable says whether a create may be served from a pool: an ordinary
// create of a configured template, with no volume (a volume is mounted
// at start) and no sandbox of its own to come from.
func (p *pools) poolable(req CreateRequest) bool {
	_, ok := p.sizes[req.Template]
	return ok && len(req.Volumes) == 0 && req.buildRoot == "" && !req.capture && req.fork == nil
}

func keyOf(req CreateRequest) poolKey {
	k := poolKey{template: req.Template, limits: req.Limits}
	if req.TemplateRef != nil {
		k.tree = template.TreeName(req.TemplateRef.Digest)
	}
	return k
}

// take counts req's demand, learns its pool, and hands out the oldest
// sandbox of it, if any. The pools of other versions of its template are
// drained.
func (p *pools) take(req CreateRequest) (pooled, bool) {
	key := keyOf(req)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	pl := p.byKey[key]
	if pl == nil {
		p.drainLocked(func(k poolKey) bool { return k.template == key.template && k.tree != key.tree })
		pl = &pool{key: key, recipe: recipeOf(req), floor: p.floorOf(req)}
		p.byKey[key] = pl
	}
	pl.asked = append(pl.asked, now)
	if len(pl.ready) == 0 {
		p.claims[false]++
		p.kick()
		return pooled{}, false
	}
	w := pl.ready[0]
	pl.ready = slices.Delete(pl.ready, 0, 1)
	p.claims[true]++
	return w, true
}

// floorOf is the configured size of req's pool: the template's, for the
// shape a create with no sizes gets; none for other shapes, which grow
// with demand only.
func (p *pools) floorOf(req CreateRequest) int {
	def, err := CreateRequest{Template: req.Template}.normalize(p.m.host)
	if err != nil || def.Limits != req.Limits {
		return 0
	}
	return p.sizes[req.Template]
}

// recipeOf is req without its identity: what a pooled sandbox starts as.
func recipeOf(req CreateRequest) CreateRequest {
	return CreateRequest{Template: req.Template, TemplateRef: req.TemplateRef, Limits: req.Limits, Timeout: req.Timeout}
}

// target is how many sandboxes pl should hold now: its floor, or the
// creates of the last demandWindow when more, up to maxPoolGrowth times
// the floor.
func (pl *pool) target(now time.Time) int {
	cut := 0
	for cut < len(pl.asked) && now.Sub(pl.asked[cut]) > demandWindow {
		cut++
	}
	pl.asked = slices.Delete(pl.asked, 0, cut)
	ceiling := maxPoolGrowth * max(pl.floor, 1)
	return min(max(pl.floor, len(pl.asked)), ceiling)
}

// kick wakes the filler, unless it is awake already.
func (p *pools) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// drainLocked removes the pools whose key match accepts, and destroys
// their sandboxes in the background.
func (p *pools) drainLocked(match func(poolKey) bool) {
	for k, pl := range p.byKey {
		if !match(k) {
			continue
		}
		delete(p.byKey, k)
		for _, w := range pl.ready {
			p.m.wg.Go(func() { p.m.destroyPooled(w.sb, "its template changed") })
		}
		if len(pl.ready) > 0 {
			p.m.log.Info("warm pool drained", "template", k.template, "tree", k.tree, "sandboxes", len(pl.ready))
		}
	}
}

// claim serves req from a warm sandbox, if its pool has one: the sandbox
// takes req's identity. ok is false when no warm sandbox did (none there,
// or the one taken failed and is destroyed): the create starts one cold.
func (m *Manager) claim(ctx context.Context, req CreateRequest) (Sandbox, bool) {
	if _, err := m.lookup(req.ID); err == nil {
		return Sandbox{}, false // the cold path says the ID is taken
	}
	w, ok := m.pools.take(req)
	if !ok {
		return Sandbox{}, false
	}
	// The refill starts once the claim is done: it would take the cores
	// the claim needs.
	defer m.pools.kick()
	begin := time.Now()
	v, err := m.giveIdentity(ctx, w, req)
	if err != nil {
		m.log.Warn("warm sandbox not claimed; creating one", "sandbox", req.ID, "pooled", w.sb.snapshot().key(), "err", err)
		m.wg.Go(func() { m.destroyPooled(w.sb, "its claim failed") })
		return Sandbox{}, false
	}
	m.metrics.created(m.rt.Name(), begin, nil)
	m.log.Info("sandbox created from a warm pool", "sandbox", req.ID, "template", req.Template,
		"runtime_id", w.sb.snapshot().key(), "duration", time.Since(begin))
	return v, true
}

// giveIdentity makes warm sandbox w the sandbox req asks for: its
// internet setting, hostname, and, through envd's /init, its env vars,
// access token, default user and clock; then its record (ID, metadata,
// timeout) and its place among the manager's sandboxes.
func (m *Manager) giveIdentity(ctx context.Context, w pooled, req CreateRequest) (Sandbox, error) {
	sb := w.sb
	sb.op.Lock()
	defer sb.op.Unlock()
	rec := sb.snapshot()
	rt := m.runtimeOf(sb)
	if rec.Internet == req.DenyInternet {
		if err := m.net.SetInternet(ctx, rec.Slot, !req.DenyInternet); err != nil {
			return Sandbox{}, fmt.Errorf("internet access: %w", err)
		}
	}
	if r, ok := rt.(runtime.Renamer); ok {
		if err := r.SetHostname(ctx, rec.key(), req.ID); err != nil {
			return Sandbox{}, err
		}
	}
	init := envdInit{
		EnvVars: req.EnvVars, DefaultUser: w.tpl.DefaultUser, DefaultWorkdir: w.tpl.Workdir,
		Timestamp: m.cfg.Now().UTC(),
	}
	if req.EnvdToken != "" {
		init.AccessToken = &req.EnvdToken
	}
	if err := forkIdentity(&init, req.ID, rt.Capabilities().VM); err != nil {
		return Sandbox{}, err
	}
	// The record is written while envd takes /init: a failed claim
	// destroys the sandbox, record and all.
	inited := make(chan error, 1)
	go func() { inited <- m.envd.init(ctx, rec.Envd, "", init) }()
	now := m.cfg.Now()
	sb.mu.Lock()
	r := &sb.rec
	r.ID, r.Pooled = req.ID, false
	r.Metadata, r.EnvVars = req.Metadata, maps.Clone(req.EnvVars)
	r.Internet, r.AutoPause, r.AutoPauseFilesystem = !req.DenyInternet, req.AutoPause, req.AutoPauseFilesystem
	r.EnvdToken, r.TimeoutSecs, r.Owner = req.EnvdToken, int64(req.Timeout/time.Second), req.Owner
	r.Started, r.StateChanged, r.EndAt = now, now, now.Add(req.Timeout)
	r.Spec.Hostname, r.Spec.Metadata = req.ID, req.Metadata
	claimed := r.clone()
	sb.mu.Unlock()
	// Unsynced: a crash of the host ends the sandbox either way.
	err := replaceRecord(sb.dir, claimed)
	if ierr := <-inited; ierr != nil || err != nil {
		return Sandbox{}, errors.Join(ierr, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sandboxes[req.ID]; ok {
		return Sandbox{}, fmt.Errorf("sandbox %s: %w", req.ID, ErrExists)
	}
	m.sandboxes[req.ID] = sb
	return sb.snapshot().view(), nil
}

// usesTree says whether a warm sandbox runs on tree name (the template
// cache keeps it).
func (p *pools) usesTree(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, pl := range p.byKey {
		if len(pl.ready) > 0 && (k.tree == name || k.tree == "" && k.template == name) {
			return true
		}
	}
	return false
}

// PoolStat is one warm pool as PoolStats reports it.
type PoolStat struct {
	Template string
	Limits   runtime.Limits
	// Ready are its warm sandboxes, Starting those on their way, Target
	// what it aims at now (its configured size or its demand).
	Ready, Starting, Target int
	// MemoryBytes is what its warm sandboxes use together (their working
	// set, read every second), MemoryBudget what all pools may use.
	MemoryBytes, MemoryBudget int64
}

// PoolStats reports the warm pools, and how many creates they served
// (hits) and did not (misses). Without pools, it reports none.
func (m *Manager) PoolStats() (stats []PoolStat, hits, misses int64) {
	if m.pools == nil {
		return nil, 0, 0
	}
	p := m.pools
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, pl := range p.byKey {
		var mem int64
		for _, w := range pl.ready {
			mem += w.memory
		}
		stats = append(stats, PoolStat{
			Template: k.template, Limits: k.limits, Ready: len(pl.ready), Starting: pl.starting,
			Target: pl.target(now), MemoryBytes: mem, MemoryBudget: p.budgetMB << 20,
		})
	}
	slices.SortFunc(stats, func(a, b PoolStat) int { return cmp.Compare(a.Template, b.Template) })
	return stats, p.claims[true], p.claims[false]
}
