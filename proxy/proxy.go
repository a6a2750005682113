package proxy

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"roost.dev/roost/bufpool"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/wire"
)

// Target is where a sandbox's traffic goes, as a Resolver sees it now.
type Target struct {
	SandboxID string
	// Paused: the sandbox exists but does not run; its ports do not answer.
	Paused bool
	// AutoResume: a request to the sandbox while Paused resumes it through
	// Config.AutoResume and is then served; without it a paused sandbox
	// does not run (502, see the package doc).
	AutoResume bool
	// AgentURL is the host agent's base URL (scheme, host, optional path).
	AgentURL *url.URL
	// Direct, when set, replaces the agent: the sandbox's host agent runs
	// in this process, and Direct says where the sandbox's ports answer
	// from here, so requests go there without the agent's HTTP hop. It is
	// asked on every request (it must be cheap): a cached Target must
	// never send traffic to an address that has since gone to another
	// sandbox. Its errors are categorised as Resolve's; a sandbox paused
	// on the host is errdefs.ErrConflict.
	Direct func(sandboxID string) (Instance, error)
	// AgentToken is sent to the agent as Roost-Agent-Token; empty sends none.
	AgentToken string
	// TrafficToken must arrive in e2b-traffic-access-token for user ports
	// unless PublicTraffic. An empty TrafficToken then admits nobody.
	TrafficToken  string
	PublicTraffic bool
}

// Resolver finds a sandbox's Target. Errors wrap errdefs.ErrNotFound (no
// such sandbox, or one that has ended: it does not run, 502 as the package
// doc says), errdefs.ErrConflict (409), errdefs.ErrUnreachable (its host
// is down: 502) or errdefs.ErrUnavailable (503); anything else is
// answered 500. It is called
// concurrently, once per sandbox until Evict, and should answer from the
// control plane's store without calling the agent.
type Resolver interface {
	Resolve(ctx context.Context, sandboxID string) (Target, error)
}

// Config configures a Proxy. Zero values take the defaults.
type Config struct {
	// EnvdPort is envd's port, which needs no traffic token (envd checks
	// its own access token). Default wire.EnvdPort.
	EnvdPort int
	// Domain of the Host form {port}-{sandboxID}.{domain}. Default "localhost".
	Domain string
	// DialRetry is how long idempotent requests are retried while the agent
	// reports the sandbox's port refused the connection (a server just
	// starting). Default 3s; negative disables retries.
	DialRetry time.Duration
	// AutoResume resumes a paused sandbox whose Target has AutoResume
	// before its request is proxied; nil leaves every paused sandbox not
	// running (502). The proxy calls it once at a time per sandbox, however many
	// requests wait (they share its outcome), on a context detached from
	// any one request and bounded by ResumeTimeout. It must return once
	// the sandbox resolves as running, or with an error (answered 502,
	// as not found when it wraps errdefs.ErrNotFound).
	AutoResume func(ctx context.Context, sandboxID string) error
	// ResumeTimeout bounds one AutoResume call. Default 2 minutes.
	ResumeTimeout time.Duration
	// AgentTLS is the TLS configuration for agents reached over https
	// (mutual TLS: it holds the control plane's client certificate).
	AgentTLS *tls.Config
	// Metrics counts the proxy's traffic (NewMetrics); nil counts nothing.
	Metrics *Metrics
}

// Proxy forwards sandbox traffic to host agents. It is an http.Handler and
// safe for concurrent use.
type Proxy struct {
	domain        string
	envdPort      int
	autoResume    func(context.Context, string) error
	resumeTimeout time.Duration
	resolver      Resolver
	log           *slog.Logger
	upstream      *Upstream
	rt            http.RoundTripper // upstream, with retries
	buffers       *bufpool.Pool
	metrics       *Metrics // nil: none

	mu sync.Mutex // guards targets, epoch and resuming
	// targets caches resolved, running sandboxes and their ReverseProxy.
	targets map[string]*target
	// epoch counts evictions, so that a resolve racing an Evict does not
	// cache what was just evicted.
	epoch uint64
	// resuming holds the resume in flight of each sandbox: requests that
	// find it paused meanwhile wait for it instead of starting another.
	resuming map[string]*resumeCall

	// upgrades is the connections protocol upgrades handed over, which
	// Shutdown ends (upgrade.go).
	upgrades upgrades
}

// resumeCall is one AutoResume call that several requests may wait for.
type resumeCall struct {
	done chan struct{} // closed when err is set
	err  error
}

// target is a cached, resolved sandbox with its ReverseProxy.
type target struct {
	Target
	basePath string // AgentURL's escaped path without a trailing "/"
	rp       *httputil.ReverseProxy
}

// New returns a Proxy. It starts nothing; Close releases idle connections.
func New(cfg Config, r Resolver, log *slog.Logger) *Proxy {
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.EnvdPort == 0 {
		cfg.EnvdPort = wire.EnvdPort
	}
	if cfg.DialRetry == 0 {
		cfg.DialRetry = 3 * time.Second
	}
	if cfg.ResumeTimeout <= 0 {
		cfg.ResumeTimeout = 2 * time.Minute
	}
	upstream := NewUpstream(cfg.EnvdPort, routePort)
	upstream.envd.TLSClientConfig, upstream.user.TLSClientConfig = cfg.AgentTLS, cfg.AgentTLS
	return &Proxy{
		domain:        strings.Trim(strings.ToLower(cfg.Domain), "."),
		envdPort:      cfg.EnvdPort,
		autoResume:    cfg.AutoResume,
		resumeTimeout: cfg.ResumeTimeout,
		resolver:      r,
		log:           log,
		upstream:      upstream,
		rt:            &retryTransport{base: upstream, window: cfg.DialRetry},
		buffers:       bufpool.New(),
		metrics:       cfg.Metrics,
		targets:       make(map[string]*target),
		resuming:      make(map[string]*resumeCall),
	}
}

// Close closes the proxy's idle connections to agents. Requests in flight
// continue; the caller's http.Server owns them, but for upgraded
// connections, which Shutdown ends.
func (p *Proxy) Close() {
	p.upstream.Close()
}

// routePort is the sandbox port of a request on its way out.
func routePort(req *http.Request) int {
	if h := hopOf(req.Context()); h != nil {
		return h.route.Port
	}
	return 0
}

// Evict drops what the proxy remembers of a sandbox, so its next request
// resolves it again. Call it when a sandbox is destroyed, paused or moved.
func (p *Proxy) Evict(sandboxID string) {
	p.mu.Lock()
	delete(p.targets, sandboxID)
	p.epoch++
	p.mu.Unlock()
}

// EvictAll drops what the proxy remembers of every sandbox (when it may
// have missed news of some).
func (p *Proxy) EvictAll() {
	p.mu.Lock()
	clear(p.targets)
	p.epoch++
	p.mu.Unlock()
}

// cached reports whether a sandbox's target is cached (for tests).
func (p *Proxy) cached(sandboxID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.targets[sandboxID] != nil
}

// ServeHTTP proxies a request Match accepts and answers 404 to any other.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route, ok := p.Match(r)
	if !ok {
		errdefs.WriteHTTP(w, http.StatusNotFound, "no sandbox in request")
		return
	}
	p.ServeRoute(w, r, route)
}

// ServeRoute proxies r along route, which Match returned for it: for a
// caller that has matched r already.
func (p *Proxy) ServeRoute(w http.ResponseWriter, r *http.Request, route Route) {
	w, r, counted := p.metrics.track(w, r, route.Port == p.envdPort)
	defer counted()
	if route.Form == FormPath && r.URL.EscapedPath() == route.Prefix &&
		(r.Method == http.MethodGet || r.Method == http.MethodHead) {
		// "/proxy/{id}/{port}" → ".../": relative links in the page then
		// resolve under the prefix. Once: the target has its slash.
		loc := route.Prefix + "/"
		if r.URL.RawQuery != "" {
			loc += "?" + r.URL.RawQuery
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusPermanentRedirect)
		return
	}
	if upgradeRequested(r.Header) {
		u, ctx, release, ok := p.upgrades.begin(r)
		if !ok {
			w.Header().Set("Connection", "close")
			errdefs.WriteHTTP(w, http.StatusServiceUnavailable, errShuttingDown.Error())
			return
		}
		defer release()
		w, r = &upgradeWriter{ResponseWriter: w, u: u}, r.WithContext(ctx)
	}
	ctx := r.Context()
	t, err := p.target(ctx, route.SandboxID)
	if err != nil {
		p.resolveFailed(w, r, route, err)
		return
	}
	if route.Port != p.envdPort && !t.PublicTraffic {
		got, want := r.Header.Get(wire.HeaderTrafficToken), t.TrafficToken
		if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			errdefs.WriteHTTP(w, http.StatusForbidden, "missing or invalid "+strings.ToLower(wire.HeaderTrafficToken))
			return
		}
	}
	if t.Paused {
		if t, err = p.resume(ctx, t.Target); err != nil {
			p.resolveFailed(w, r, route, err)
			return
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		defer FullDuplex(w, r)()
	}
	h := &hop{route: route}
	if t.Direct != nil {
		inst, err := t.Direct(route.SandboxID)
		if err != nil {
			p.evictTarget(t)
			if errors.Is(err, errdefs.ErrConflict) {
				// Paused on the host before the store says so (a pause
				// landing): not running, as when the store says it.
				err = &notRunningError{id: route.SandboxID, paused: true}
			}
			p.resolveFailed(w, r, route, err)
			return
		}
		h.toSandbox = true
		h.sandbox = sandboxTarget{id: inst.Key, addr: netip.AddrPortFrom(inst.Addr, uint16(route.Port))}
		// A refused dial is retried while a server starts; a sandbox
		// killed meanwhile must end the retries at once (not running,
		// 502), and its address, soon another sandbox's, not be dialled
		// (stillThere).
		h.direct, h.inst = t.Direct, inst
	}
	ctx = context.WithValue(ctx, hopKey{}, h)
	t.rp.ServeHTTP(w, r.WithContext(ctx))
}

// resume resumes a paused sandbox that has auto-resume, and resolves it
// again. Concurrent requests to one sandbox share one AutoResume call; a
// request whose client leaves stops waiting, the resume goes on.
func (p *Proxy) resume(ctx context.Context, paused Target) (*target, error) {
	id := paused.SandboxID
	if p.autoResume == nil || !paused.AutoResume {
		return nil, &notRunningError{id: id, paused: true}
	}
	p.mu.Lock()
	c, leader := p.resuming[id], false
	if c == nil {
		c, leader = &resumeCall{done: make(chan struct{})}, true
		p.resuming[id] = c
	}
	p.mu.Unlock()
	if leader {
		p.runResume(ctx, id, c)
	} else {
		select {
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.err != nil {
		return nil, &resumeError{id: id, err: c.err}
	}
	t, err := p.target(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.Paused {
		p.log.Warn("proxy auto-resume left the sandbox paused", "sandbox", id)
		return nil, &resumeError{id: id, err: errors.New("still paused after resume")}
	}
	return t, nil
}

// runResume makes c's AutoResume call and publishes its outcome, also if
// it panics. A request that saw the sandbox paused just before another
// resume finished would resume it again: the store is asked first.
func (p *Proxy) runResume(ctx context.Context, id string, c *resumeCall) {
	c.err = errors.New("resume did not finish")
	defer func() {
		p.mu.Lock()
		delete(p.resuming, id)
		delete(p.targets, id)
		p.epoch++
		p.mu.Unlock()
		close(c.done)
	}()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.resumeTimeout)
	defer cancel()
	if cur, err := p.resolver.Resolve(ctx, id); err == nil && !cur.Paused {
		c.err = nil
		return
	}
	start := time.Now()
	c.err = p.autoResume(ctx, id)
	if c.err != nil {
		p.log.Warn("proxy auto-resume failed", "sandbox", id, "err", c.err)
		return
	}
	p.log.Info("proxy auto-resumed sandbox", "sandbox", id, "took", time.Since(start))
}

// resumeError is a failed auto-resume: 502, as not found when the sandbox
// is gone.
type resumeError struct {
	id  string
	err error
}

func (e *resumeError) Error() string { return "auto-resume sandbox " + e.id + ": " + e.err.Error() }
func (e *resumeError) Unwrap() error { return e.err }

// target returns the cached target of a sandbox, or resolves it. Paused
// sandboxes are never cached: their next request must see them resumed.
func (p *Proxy) target(ctx context.Context, id string) (*target, error) {
	p.mu.Lock()
	t, epoch := p.targets[id], p.epoch
	p.mu.Unlock()
	if t != nil {
		return t, nil
	}
	res, err := p.resolver.Resolve(ctx, id)
	if err != nil {
		return nil, err
	}
	if res.Direct == nil && (res.AgentURL == nil || res.AgentURL.Host == "") {
		return nil, fmt.Errorf("sandbox %s has no agent address: %w", id, errdefs.ErrUnreachable)
	}
	t = p.newTarget(res)
	if res.Paused {
		return t, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.targets[id]; cur != nil {
		return cur, nil
	}
	if p.epoch == epoch {
		p.targets[id] = t
	}
	return t, nil
}

func (p *Proxy) newTarget(res Target) *target {
	t := &target{Target: res}
	if res.AgentURL != nil {
		t.basePath = strings.TrimSuffix(res.AgentURL.EscapedPath(), "/")
	}
	t.rp = &httputil.ReverseProxy{
		Rewrite:    t.rewrite,
		Transport:  p.rt,
		BufferPool: p.buffers,
		// Zero: ReverseProxy flushes every write of a response of unknown
		// length (Connect streams, chunked long polls) and of SSE at once,
		// and lets a response of known length go out in full buffers: a
		// write syscall per response, not one per header and chunk.
		FlushInterval:  0,
		ModifyResponse: modifyResponse,
		ErrorHandler:   func(w http.ResponseWriter, r *http.Request, err error) { p.proxyFailed(w, r, t, err) },
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return t
}

// rewrite sends the request to {agent}/proxy/{id}/{port}{path}?{query}.
func (t *target) rewrite(pr *httputil.ProxyRequest) {
	h := hopOf(pr.In.Context())
	route, isDirect := h.route, h.toSandbox
	u := pr.Out.URL
	u.User, u.Fragment, u.RawFragment = nil, "", ""
	var escaped string
	if isDirect {
		escaped = route.Path
		u.Scheme, u.Host = "http", SandboxHost(h.sandbox.id, h.sandbox.addr)
	} else {
		escaped = t.basePath + wire.ProxyPrefix + route.SandboxID + "/" + strconv.Itoa(route.Port) + route.Path
		u.Scheme, u.Host = t.AgentURL.Scheme, t.AgentURL.Host
	}
	if path, err := url.PathUnescape(escaped); err == nil {
		u.Path, u.RawPath = path, escaped
	} else {
		// Unreachable: route.Path came from EscapedPath.
		u.Path, u.RawPath = escaped, ""
	}
	// The query stays byte for byte. ReverseProxy drops parameters Go
	// cannot parse (";" separators) before Rewrite, against request
	// smuggling between proxies that read the query; this proxy never
	// reads it, and the sandbox's server decides what ";" means.
	u.RawQuery, u.ForceQuery = pr.In.URL.RawQuery, pr.In.URL.ForceQuery
	// The sandbox sees the Host the client used, as in E2B: a server that
	// builds absolute URLs, checks Host (Vite, Django's ALLOWED_HOSTS), or
	// serves several names gets the public name, not the agent's address.
	pr.Out.Host = pr.In.Host
	// The control plane is the edge: forwarded headers a client sent are
	// dropped (ReverseProxy removes them) and set afresh.
	pr.SetXForwarded()
	if route.Form == FormPath {
		pr.Out.Header.Set("X-Forwarded-Prefix", route.Prefix)
		// The control plane's origin's cookies (a dashboard session) are
		// not the sandbox's to read.
		pr.Out.Header.Del("Cookie")
	}
	pr.Out.Header.Del(wire.HeaderTrafficToken)
	pr.Out.Header.Del(wire.HeaderAgentToken)
	if t.AgentToken != "" && !isDirect {
		pr.Out.Header.Set(wire.HeaderAgentToken, t.AgentToken)
	}
}

// pathFormCSP confines every path-form response to an opaque origin: all
// sandboxes' path-form pages share the control plane's origin, and without
// it one sandbox's page could read another's (or the dashboard's storage)
// with same-origin requests. Scripts, forms and popups keep working; what
// is missing is allow-same-origin. A policy the sandbox's server sets is
// enforced as well (browsers apply every policy they get).
const pathFormCSP = "sandbox allow-scripts allow-forms allow-popups allow-popups-to-escape-sandbox allow-modals allow-downloads allow-pointer-lock allow-presentation"

// modifyResponse keeps path-form redirects under the prefix, and keeps
// untrusted pages off the shared origin: an opaque origin and no cookies.
// Browsers belong on the subdomain form, where each sandbox port is an
// origin of its own.
func modifyResponse(resp *http.Response) error {
	h := hopOf(resp.Request.Context())
	if h == nil || h.route.Form != FormPath {
		return nil
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		resp.Header.Set("Location", rewriteLocation(loc, h.route.Prefix, resp.Request.Host))
	}
	resp.Header.Del("Set-Cookie")
	resp.Header.Add("Content-Security-Policy", pathFormCSP)
	return nil
}

// proxyFailed answers a request the agent did not: 502 when it could not
// be reached, 504 on a timeout, nothing when the client has gone.
func (p *Proxy) proxyFailed(w http.ResponseWriter, r *http.Request, t *target, err error) {
	if r.Context().Err() != nil {
		if errors.Is(context.Cause(r.Context()), errShuttingDown) {
			// An upgrade Shutdown ended before the sandbox answered it.
			w.Header().Set("Connection", "close")
			errdefs.WriteHTTP(w, http.StatusServiceUnavailable, errShuttingDown.Error())
			return
		}
		p.log.Debug("proxy client gone", "sandbox", t.SandboxID, "err", err)
		return
	}
	err = UpstreamError(err)
	if errors.Is(err, errdefs.ErrUnreachable) {
		// The sandbox may have moved, or its host be down: resolve afresh.
		p.evictTarget(t)
	}
	timeout := errors.Is(err, errdefs.ErrTimeout)
	if d, ok := sandboxOf(r.Context()); ok {
		direct := d.addr
		// No agent in between: the sandbox's own server failed to answer.
		msg := fmt.Sprintf("sandbox %s: nothing answers on port %d", t.SandboxID, direct.Port())
		if timeout {
			msg = fmt.Sprintf("sandbox %s: port %d did not answer in time", t.SandboxID, direct.Port())
		}
		status := WriteUpstreamError(w, err, msg)
		p.log.Debug("proxy sandbox request failed", "sandbox", t.SandboxID, "addr", direct, "status", status, "err", err)
		return
	}
	msg := "sandbox host unreachable"
	if timeout {
		msg = "sandbox host did not answer in time"
	}
	status := WriteUpstreamError(w, err, msg)
	p.log.Warn("proxy agent request failed", "sandbox", t.SandboxID, "agent", t.AgentURL.Host, "status", status, "err", err)
}

// evictTarget evicts t if it is still the cached target of its sandbox.
func (p *Proxy) evictTarget(t *target) {
	p.mu.Lock()
	if p.targets[t.SandboxID] == t {
		delete(p.targets, t.SandboxID)
		p.epoch++
	}
	p.mu.Unlock()
}

// notRunningError is a sandbox that does not run: paused without
// auto-resume, or one the resolver does not know (never created, killed,
// ended at its timeout). Its category is errdefs.ErrUnreachable, and only
// that: the package doc says why the sandbox route answers it 502.
type notRunningError struct {
	id     string
	paused bool
	cause  error // why the resolver did not find it; nil when paused
}

func (e *notRunningError) Error() string {
	if e.paused {
		return "sandbox " + e.id + " is paused"
	}
	return "sandbox " + e.id + " was not found: " + e.cause.Error()
}

func (e *notRunningError) Unwrap() error { return errdefs.ErrUnreachable }

// message is the answer's message: what the client may know.
func (e *notRunningError) message() string {
	if e.paused {
		return "sandbox " + e.id + " is paused"
	}
	return "sandbox " + e.id + " was not found"
}

// resolveFailed maps a resolve or resume error to an answer. A sandbox the
// resolver does not find (errdefs.ErrNotFound, also when a resume finds it
// gone) does not run: notRunningError.
func (p *Proxy) resolveFailed(w http.ResponseWriter, r *http.Request, route Route, err error) {
	if r.Context().Err() != nil {
		p.log.Debug("proxy client gone", "sandbox", route.SandboxID, "err", err)
		return
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		err = &notRunningError{id: route.SandboxID, cause: err}
	}
	status := errdefs.HTTPStatus(err)
	var (
		nr   *notRunningError
		rerr *resumeError
	)
	switch {
	case errors.As(err, &nr):
		p.log.Debug("proxy sandbox not running", "sandbox", route.SandboxID, "status", status, "err", err)
		errdefs.WriteHTTP(w, status, nr.message())
	case errors.As(err, &rerr):
		// Logged once, where it failed; its category is the resume's, the
		// answer is the sandbox's: it could not be made to run.
		errdefs.WriteHTTP(w, http.StatusBadGateway, "sandbox "+route.SandboxID+" is paused and could not be resumed")
	default:
		p.log.Warn("proxy resolve failed", "sandbox", route.SandboxID, "status", status, "err", err)
		errdefs.WriteHTTP(w, status, "sandbox "+route.SandboxID+" unavailable")
	}
}
