package agent

import (
	"cmp"
	"context"
	"runtime/debug"
	"time"

	"roost.dev/roost/template"
)

// The filler keeps each pool at its target, within the memory budget.
const (
	// fillParallel is how many warm sandboxes start at once, across
	// pools: fills must leave the host's cores to the creates they serve.
	fillParallel = 2
	// fillRetry is how long a pool waits after a failed fill.
	fillRetry = 10 * time.Second
	// poolTick is how often the filler looks again unwoken: demand ages,
	// memory is read, pools above their target shrink.
	poolTick = time.Second
	// poolIdle is how long a pool holds sandboxes beyond its target
	// before it lets one go: a burst's pool does not shrink between two
	// bursts close together.
	poolIdle = 30 * time.Second
	// unreadMemory is what a warm sandbox is taken to use before its
	// memory is read.
	unreadMemory = 64 << 20
	// pooledStartTimeout bounds the start of a warm sandbox.
	pooledStartTimeout = 2 * time.Minute
)

// fillLoop runs the filler until the manager closes, then destroys the
// warm sandboxes: they have no identity a next agent could give back.
func (p *pools) fillLoop() {
	t := time.NewTicker(poolTick)
	defer t.Stop()
	for {
		select {
		case <-p.m.ctx.Done():
			p.closeAll()
			return
		case <-p.wake:
		case <-t.C:
			p.readMemory()
			if p.trim() {
				continue
			}
		}
		p.fill()
	}
}

// fill starts warm sandboxes for the pools below their target, as far as
// fillParallel and the memory budget allow.
func (p *pools) fill() {
	defer func() {
		if r := recover(); r != nil {
			p.m.log.Error("warm pool filler panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	inFlight, used := 0, int64(0)
	for _, pl := range p.byKey {
		inFlight += pl.starting
		used += pl.memoryLocked()
	}
	for _, pl := range p.byKey {
		for inFlight < fillParallel && len(pl.ready)+pl.starting < pl.target(now) && now.Sub(pl.failedAt) >= fillRetry {
			need := pl.estimateLocked()
			if used+need > p.budgetMB<<20 {
				return
			}
			pl.starting++
			inFlight++
			used += need
			p.m.wg.Go(func() { p.start(pl) })
		}
	}
}

// memoryLocked is what pl's sandboxes use, by their last reading.
func (pl *pool) memoryLocked() int64 {
	var n int64
	for _, w := range pl.ready {
		n += cmp.Or(w.memory, unreadMemory)
	}
	return n + int64(pl.starting)*pl.estimateLocked()
}

// estimateLocked is what one more sandbox of pl will use: the mean of
// those read, or unreadMemory.
func (pl *pool) estimateLocked() int64 {
	var sum, n int64
	for _, w := range pl.ready {
		if w.memory > 0 {
			sum, n = sum+w.memory, n+1
		}
	}
	if n == 0 {
		return unreadMemory
	}
	return sum / n
}

// start starts one warm sandbox of pl and adds it, unless pl was drained
// meanwhile.
func (p *pools) start(pl *pool) {
	sb, tpl, err := p.m.startPooled(pl.recipe)
	p.mu.Lock()
	pl.starting--
	live := p.byKey[pl.key] == pl
	switch {
	case err != nil:
		pl.failedAt = time.Now()
	case live:
		pl.ready = append(pl.ready, pooled{sb: sb, tpl: tpl})
	}
	p.mu.Unlock()
	switch {
	case err != nil:
		if p.m.ctx.Err() == nil {
			p.m.log.Warn("warm sandbox not started", "template", pl.key.template, "retry_after", fillRetry, "err", err)
		}
	case !live:
		p.m.destroyPooled(sb, "its pool was drained")
	default:
		p.kick()
	}
}

// startPooled starts a sandbox of recipe with no identity: a runtime ID
// of its own, which only the host sees, and no /init.
func (m *Manager) startPooled(recipe CreateRequest) (*sandbox, template.Template, error) {
	req, err := recipe.normalize(m.host)
	if err != nil {
		return nil, template.Template{}, err
	}
	req.ID, req.pooled = newID(), true
	now := m.cfg.Now()
	sb := &sandbox{
		dir: m.sandboxDir(req.ID),
		rec: record{
			ID: req.ID, Template: req.Template, State: StateStarting, Slot: -1, Pooled: true, Internet: true,
			TimeoutSecs: int64(req.Timeout / time.Second), Started: now, StateChanged: now,
		},
	}
	if req.TemplateRef != nil {
		sb.rec.Tree = template.TreeName(req.TemplateRef.Digest)
	}
	ctx, cancel := context.WithTimeout(m.ctx, pooledStartTimeout)
	defer cancel()
	tpl, err := m.templateOf(ctx, req)
	if err != nil {
		return nil, template.Template{}, err
	}
	sb.op.Lock()
	defer sb.op.Unlock()
	if _, err := m.start(ctx, sb, req); err != nil {
		return nil, template.Template{}, err
	}
	return sb, tpl, nil
}

// destroyPooled destroys warm sandbox sb, which no one else can reach.
func (m *Manager) destroyPooled(sb *sandbox, reason string) {
	sb.op.Lock()
	defer sb.op.Unlock()
	if err := m.destroyLocked(context.WithoutCancel(m.ctx), sb, "warm pool: "+reason); err != nil {
		m.log.Error("warm sandbox not destroyed", "sandbox", sb.snapshot().key(), "err", err)
	}
}

// readMemory reads what each warm sandbox uses now (its working set: the
// memory the kernel cannot take back without it).
func (p *pools) readMemory() {
	p.mu.Lock()
	all := p.warmLocked()
	p.mu.Unlock()
	read := map[*sandbox]int64{}
	for _, sb := range all {
		st, err := p.m.runtimeOf(sb).Stats(p.m.ctx, sb.snapshot().key())
		if err == nil {
			read[sb] = int64(st.MemoryWorkingSet)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pl := range p.byKey {
		for i := range pl.ready {
			if n, ok := read[pl.ready[i].sb]; ok {
				pl.ready[i].memory = n
			}
		}
	}
}

// trim lets go of one warm sandbox: of the fullest pool while the pools
// are over their memory budget (more was read than estimated), else of a
// pool that has held more than its target for poolIdle. It says whether
// it did.
func (p *pools) trim() bool {
	now := time.Now()
	p.mu.Lock()
	var used int64
	var idle *pool
	for _, pl := range p.byKey {
		used += pl.memoryLocked()
		switch {
		case len(pl.ready) <= pl.target(now):
			pl.aboveSince = time.Time{}
		case pl.aboveSince.IsZero():
			pl.aboveSince = now
		case now.Sub(pl.aboveSince) >= poolIdle:
			idle = pl
		}
	}
	victim := idle
	if used > p.budgetMB<<20 {
		victim = p.fullestLocked()
	}
	return p.letGo(victim, "the pool is larger than its demand or its memory budget")
}

// evictOne destroys one warm sandbox, of the fullest pool, to free its
// network slot for a create the host had no slot for. It says whether
// there was one.
func (p *pools) evictOne() bool {
	p.mu.Lock()
	return p.letGo(p.fullestLocked(), "a create needs its network slot")
}

// fullestLocked is the pool with the most warm sandboxes, or nil when
// none has any.
func (p *pools) fullestLocked() *pool {
	var fullest *pool
	for _, pl := range p.byKey {
		if len(pl.ready) > 0 && (fullest == nil || len(pl.ready) > len(fullest.ready)) {
			fullest = pl
		}
	}
	return fullest
}

// letGo takes the oldest warm sandbox of pl (nil: none) out of it,
// unlocks p.mu, which the caller holds, and destroys the sandbox. It
// says whether there was one.
func (p *pools) letGo(pl *pool, reason string) bool {
	if pl == nil {
		p.mu.Unlock()
		return false
	}
	w := pl.ready[0]
	pl.ready = pl.ready[1:]
	p.mu.Unlock()
	p.m.destroyPooled(w.sb, reason)
	return true
}

// closeAll destroys every warm sandbox, when the manager closes.
func (p *pools) closeAll() {
	p.mu.Lock()
	all := p.warmLocked()
	clear(p.byKey)
	p.mu.Unlock()
	for _, sb := range all {
		p.m.destroyPooled(sb, "the agent stops")
	}
}

// warmLocked is every warm sandbox of every pool.
func (p *pools) warmLocked() []*sandbox {
	var all []*sandbox
	for _, pl := range p.byKey {
		for _, w := range pl.ready {
			all = append(all, w.sb)
		}
	}
	return all
}
