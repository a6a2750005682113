package portforward

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultInterval     = 250 * time.Millisecond
	defaultIdleInterval = 30 * time.Second
	// activeWindow is how long after the last sign of activity (a Kick, or
	// a change in the listening sockets) scans stay at Interval: most
	// servers started through envd listen within it. After it the period
	// grows with the quiet time (an eighth of it) up to IdleInterval, so
	// a sandbox that just started, of hundreds started one after another,
	// costs a few dozen scans in its first minute rather than 240, and an
	// idle one two a minute.
	activeWindow = 10 * time.Second
	rampDivisor  = 8
)

// Config configures a Forwarder.
type Config struct {
	// Interval is the scan period; a server is reachable on the external
	// addresses at most about one Interval after it starts listening.
	// Default 250ms.
	Interval time.Duration
	// IdleInterval is the longest scan period, reached once nothing
	// happened (no Kick, no change in the listening sockets) for 8 ×
	// IdleInterval; from 10 s of quiet on, the period is an eighth of the
	// quiet time, at least Interval. A Kick ends a longer wait at once:
	// the next scan runs no later than Interval after the last.
	// Every scan walks the host's whole listening hash (all sandboxes'
	// sockets) and wakes a process: a thousand idle sandboxes scanning
	// every 2 s took a quarter of a 2-core host. A server that starts
	// listening long after the last request is still found in time for
	// its first proxied one: a refused connection makes the proxy kick
	// envd before it retries (proxy.Upstream). A forwarder starts idle:
	// a sandbox that no one uses (a warm pool's) scans every IdleInterval
	// from its start, and its first request (a create's /init) kicks.
	// Default 30s.
	IdleInterval time.Duration
	// Exclude lists ports never forwarded (envd's own, 49983). They are still
	// reported by Ports.
	Exclude []uint16
	// ProcRoot is where proc is mounted; default "/proc". The tables read are
	// those of the network namespace of the process that reads them.
	ProcRoot string
}

// Port is one listening TCP socket.
type Port struct {
	Port uint16 `json:"port"`
	// Address is the address the server listens on, e.g. "127.0.0.1", "::1",
	// "0.0.0.0". IPv4-mapped IPv6 addresses are reported as IPv4.
	Address string `json:"address"`
	// Forwarded is true when envd forwards the external addresses' Port to
	// this address. When loopback servers on both IPv4 and IPv6 share a port,
	// only the one forwarded to (IPv4 first) is marked.
	Forwarded bool `json:"forwarded"`
}

// Forwarder finds loopback-only TCP servers and forwards the sandbox's
// external IPv4 addresses to them. Run does the work; Ports may be called
// from any goroutine at any time.
type Forwarder struct {
	interval     time.Duration
	idleInterval time.Duration
	lastActive   atomic.Int64 // unix nanoseconds of the last Kick or port change
	idle         atomic.Bool  // Run sleeps for IdleInterval: a Kick must wake it
	kicked       chan struct{}
	procRoot     string
	sockDiag     bool // ask the kernel over netlink instead of reading procRoot
	exclude      map[uint16]bool
	log          *slog.Logger

	started atomic.Bool
	scans   atomic.Uint64 // completed scans, so tests can wait for one

	mu    sync.Mutex // guards ports, next and stopped
	ports []Port
	// next is closed when the next scan to start ends (PortsNow).
	next    chan struct{}
	stopped bool // Run has returned: no scan will close next

	// Owned by the goroutine in Run and never touched by any other.
	forwards     map[netip.AddrPort]*forward // by the external address listened on
	listenFailed map[netip.AddrPort]struct{} // failures already logged, so each is logged once
	scanFailed   bool                        // the last scan failed and was logged
}

// New returns a Forwarder; nothing happens until Run. A nil log discards.
func New(cfg Config, log *slog.Logger) *Forwarder {
	if cfg.Interval <= 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.IdleInterval < cfg.Interval {
		cfg.IdleInterval = max(cfg.Interval, defaultIdleInterval)
	}
	// The live system is asked over sock_diag; a ProcRoot given by a test
	// is read as files.
	sockDiag := cfg.ProcRoot == ""
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	exclude := make(map[uint16]bool, len(cfg.Exclude))
	for _, p := range cfg.Exclude {
		exclude[p] = true
	}
	return &Forwarder{
		interval:     cfg.Interval,
		idleInterval: cfg.IdleInterval,
		procRoot:     cfg.ProcRoot,
		sockDiag:     sockDiag,
		exclude:      exclude,
		log:          log,
		kicked:       make(chan struct{}, 1),
		next:         make(chan struct{}),
		forwards:     map[netip.AddrPort]*forward{},
		listenFailed: map[netip.AddrPort]struct{}{},
	}
}

// Run scans every Interval (IdleInterval when idle) and forwards until ctx
// is done, then closes every forwarding listener and connection, waits for
// their goroutines, and returns nil. Scan and listen failures are logged
// and retried, never returned. Run may be called once.
func (f *Forwarder) Run(ctx context.Context) error {
	if !f.started.CompareAndSwap(false, true) {
		return errors.New("portforward: Run called twice")
	}
	defer f.stop()
	t := time.NewTimer(f.interval)
	defer t.Stop()
	for {
		f.scanSafe(ctx)
		if !f.sleep(ctx, t, time.Now()) {
			return nil
		}
	}
}

// sleep waits until the next scan is due after one at last: nextInterval
// later, or Interval later once a Kick ends an idle wait. It returns false
// when ctx is done.
func (f *Forwarder) sleep(ctx context.Context, t *time.Timer, last time.Time) bool {
	select {
	case <-f.kicked: // sent after the last wait had ended: stale
	default:
	}
	// Set before lastActive is read: a Kick in between either is seen
	// here or sees the flag and wakes the wait.
	f.idle.Store(true)
	defer f.idle.Store(false)
	d := f.nextInterval(last)
	if d <= f.interval {
		f.idle.Store(false)
	}
	t.Reset(d)
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-f.kicked:
			f.idle.Store(false)
			if d := f.interval - time.Since(last); d > 0 {
				t.Reset(d)
				continue
			}
			return true
		}
	}
}

// Kick marks the sandbox as active: scans run at Interval for the next
// 10 s, starting no later than Interval after the last one, then less
// often. envd kicks on every request but /health, since servers are
// started through it and the proxy asks it to look (see IdleInterval).
func (f *Forwarder) Kick() {
	f.lastActive.Store(time.Now().UnixNano())
	if f.idle.Load() {
		select {
		case f.kicked <- struct{}{}:
		default:
		}
	}
}

func (f *Forwarder) nextInterval(now time.Time) time.Duration {
	quiet := now.Sub(time.Unix(0, f.lastActive.Load()))
	if quiet < activeWindow {
		return f.interval
	}
	return min(f.idleInterval, max(f.interval, quiet/rampDivisor))
}

// Ports returns the listening TCP sockets found by the last scan, sorted by
// port and then address, without duplicates and without envd's own
// forwarding listeners. It is empty before the first scan and after Run
// returns.
func (f *Forwarder) Ports() []Port {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(make([]Port, 0, len(f.ports)), f.ports...)
}

// PortsNow returns the listening TCP sockets as a scan that starts after
// the call finds them: it kicks, and waits for that scan, which starts
// within Interval, or for ctx. Before Run and after it, it returns Ports.
func (f *Forwarder) PortsNow(ctx context.Context) ([]Port, error) {
	f.mu.Lock()
	next, stopped := f.next, f.stopped
	f.mu.Unlock()
	if !f.started.Load() || stopped {
		return f.Ports(), nil
	}
	f.Kick()
	select {
	case <-next:
		return f.Ports(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *Forwarder) stop() {
	for at, fw := range f.forwards {
		fw.close()
		delete(f.forwards, at)
	}
	f.mu.Lock()
	f.ports = nil
	f.stopped = true
	close(f.next)
	f.mu.Unlock()
}

// scanSafe runs one scan; a panic is logged and the next tick tries again.
func (f *Forwarder) scanSafe(ctx context.Context) {
	f.mu.Lock()
	this := f.next
	f.next = make(chan struct{})
	f.mu.Unlock()
	defer close(this)
	defer f.scans.Add(1)
	defer recoverLog(f.log, "port scan")
	f.scan(ctx)
}

// listeners returns the listening TCP sockets, from sock_diag when the
// forwarder watches the live system (falling back to /proc if the kernel
// lacks it), else from the proc tables under procRoot.
func (f *Forwarder) listeners() ([]netip.AddrPort, error) {
	if f.sockDiag {
		if socks, err := diagListeners(); err == nil {
			return socks, nil
		}
	}
	return readListeners(f.procRoot)
}

func (f *Forwarder) scan(ctx context.Context) {
	socks, err := f.listeners()
	if err == nil {
		p := makePlan(socks, f.forwards, f.exclude)
		// With nothing to forward (an idle sandbox's usual state) the
		// addresses do not matter, and reading them is half a scan's cost.
		var ext []netip.Addr
		if len(p.targets) > 0 {
			ext, err = externalAddrs()
		}
		if err == nil {
			active := f.reconcile(ctx, p.targets, ext)
			f.publish(p, active)
		}
	}
	// A failure keeps the forwards of the last good scan: a transient error
	// must not cut connections.
	switch {
	case err != nil && !f.scanFailed:
		f.log.Warn("port scan failed", "err", err)
		f.scanFailed = true
	case err == nil && f.scanFailed:
		f.log.Info("port scan recovered")
		f.scanFailed = false
	}
}

// plan is what one scan found.
type plan struct {
	// listening holds every listening socket except envd's own forwarding
	// listeners: unmapped, sorted by port then address, deduplicated.
	listening []netip.AddrPort
	// targets maps each port to forward to the loopback socket to dial.
	targets map[uint16]netip.AddrPort
}

// makePlan decides which ports to forward: those on which only loopback
// sockets listen, not excluded. own holds the forwarding listeners, which
// show up in the tables too and must not count as a server of their own.
func makePlan[V any](socks []netip.AddrPort, own map[netip.AddrPort]V, exclude map[uint16]bool) plan {
	seen := make(map[netip.AddrPort]bool, len(socks))
	listening := make([]netip.AddrPort, 0, len(socks))
	for _, s := range socks {
		s = netip.AddrPortFrom(s.Addr().Unmap(), s.Port())
		if _, ours := own[s]; ours || seen[s] || s.Port() == 0 || !s.Addr().IsValid() {
			continue
		}
		seen[s] = true
		listening = append(listening, s)
	}
	slices.SortFunc(listening, func(a, b netip.AddrPort) int {
		return cmp.Or(cmp.Compare(a.Port(), b.Port()), a.Addr().Compare(b.Addr()))
	})

	// A wildcard or any other non-loopback socket already makes the port
	// reachable (and would collide with a forwarding listener).
	reachable := map[uint16]bool{}
	for _, s := range listening {
		if !s.Addr().IsLoopback() {
			reachable[s.Port()] = true
		}
	}
	targets := map[uint16]netip.AddrPort{}
	for _, s := range listening {
		p := s.Port()
		if reachable[p] || exclude[p] || !s.Addr().IsLoopback() {
			continue
		}
		// Sorted, so the first is IPv4 (127.0.0.1 first) when there is one.
		if _, ok := targets[p]; !ok {
			targets[p] = s
		}
	}
	return plan{listening: listening, targets: targets}
}

// reconcile makes the forwarding listeners match targets × ext, and reports
// which ports have at least one.
func (f *Forwarder) reconcile(ctx context.Context, targets map[uint16]netip.AddrPort, ext []netip.Addr) map[uint16]bool {
	want := make(map[netip.AddrPort]netip.AddrPort, len(targets)*len(ext))
	for port, target := range targets {
		for _, a := range ext {
			want[netip.AddrPortFrom(a, port)] = target
		}
	}
	for at, fw := range f.forwards {
		if target, ok := want[at]; ok && target == fw.target {
			continue
		}
		fw.close()
		delete(f.forwards, at)
		f.log.Info("port forward stopped", "listen", at, "target", fw.target)
	}
	for at := range f.listenFailed {
		if _, ok := want[at]; !ok {
			delete(f.listenFailed, at)
		}
	}
	var lc net.ListenConfig
	// Plain TCP, not Go's default MPTCP: CRIU cannot checkpoint an MPTCP
	// socket, so one would stop the sandbox from hibernating.
	lc.SetMultipathTCP(false)
	for at, target := range want {
		if _, ok := f.forwards[at]; ok || ctx.Err() != nil {
			continue
		}
		ln, err := lc.Listen(ctx, "tcp4", at.String())
		if err != nil {
			if _, logged := f.listenFailed[at]; !logged && ctx.Err() == nil {
				f.listenFailed[at] = struct{}{}
				f.log.Warn("port forward listen failed", "listen", at, "target", target, "err", err)
			}
			continue
		}
		delete(f.listenFailed, at)
		f.forwards[at] = startForward(ctx, ln, target, f.log)
		f.log.Info("port forward started", "listen", at, "target", target)
	}
	active := make(map[uint16]bool, len(targets))
	for at := range f.forwards {
		active[at.Port()] = true
	}
	return active
}

func (f *Forwarder) publish(p plan, active map[uint16]bool) {
	ports := make([]Port, 0, len(p.listening))
	for _, s := range p.listening {
		target, ok := p.targets[s.Port()]
		ports = append(ports, Port{
			Port:      s.Port(),
			Address:   s.Addr().String(),
			Forwarded: ok && target == s && active[s.Port()],
		})
	}
	f.mu.Lock()
	// What the first scan finds is where the sandbox starts, not a change.
	changed := f.ports != nil && !slices.Equal(f.ports, ports)
	f.ports = ports
	f.mu.Unlock()
	if changed {
		f.Kick()
	}
}

// externalAddrs returns the IPv4 addresses of the non-loopback interfaces,
// sorted. They are read on every scan so that an interface configured after
// envd starts is picked up.
func externalAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !ip.IsLoopback() && !ip.IsUnspecified() && !ip.IsMulticast() {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// recoverLog, deferred directly, turns a panic into an error log with the
// stack so a long-lived loop can carry on.
func recoverLog(log *slog.Logger, where string) {
	if r := recover(); r != nil {
		recoverLogged(log, where, r)
	}
}

// recoverLogged logs a recovered panic; called from the deferred function
// that recovered it, so the stack still shows where it happened.
func recoverLogged(log *slog.Logger, where string, r any) {
	log.Error("recovered from panic", "where", where, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
}
