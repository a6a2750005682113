package proxy

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"roost.dev/roost/runtime"
)

// agentTokenHeader carries the agent token, so that the client's own
// Authorization header reaches the sandbox untouched.
const agentTokenHeader = "Roost-Agent-Token"

// Target is where a sandbox's traffic goes, as a Resolver sees it now.
type Target struct {
	SandboxID string
	// Paused: the sandbox exists but does not run; its ports do not answer.
	Paused bool
	// AgentURL is the host agent's base URL (scheme, host, optional path).
	AgentURL *url.URL
	// AgentToken is sent to the agent as Roost-Agent-Token; empty sends none.
	AgentToken string
	// TrafficToken must arrive in e2b-traffic-access-token for user ports
	// unless PublicTraffic. An empty TrafficToken then admits nobody.
	TrafficToken  string
	PublicTraffic bool
}

// Resolver finds a sandbox's Target. Errors wrap runtime.ErrNotFound (no
// such sandbox: 404), runtime.ErrConflict (409) or runtime.ErrUnavailable
// (its host is down: 502); anything else is answered 502. It is called
// concurrently, once per sandbox until Evict, and should answer from the
// control plane's store without calling the agent.
type Resolver interface {
	Resolve(ctx context.Context, sandboxID string) (Target, error)
}

// Config configures a Proxy. Zero values take the defaults.
type Config struct {
	// Domain of the Host form {port}-{sandboxID}.{domain}. Default "localhost".
	Domain string
	// EnvdPort is envd's port, which needs no traffic token (envd checks
	// its own access token). Default 49983.
	EnvdPort int
	// DialRetry is how long idempotent requests are retried while the agent
	// reports the sandbox's port refused the connection (a server just
	// starting). Default 3s; negative disables retries.
	DialRetry time.Duration
	// AutoResume, when set, resumes a paused sandbox before its request is
	// proxied; nil answers 409. It runs on the request's context.
	AutoResume func(ctx context.Context, sandboxID string) error
}

// Proxy forwards sandbox traffic to host agents. It is an http.Handler and
// safe for concurrent use.
type Proxy struct {
	domain     string
	envdPort   int
	autoResume func(context.Context, string) error
	resolver   Resolver
	log        *slog.Logger
	transport  *http.Transport
	rt         http.RoundTripper
	buffers    *bufferPool

	mu sync.Mutex // guards targets and epoch
	// targets caches resolved, running sandboxes and their ReverseProxy.
	targets map[string]*target
	// epoch counts evictions, so that a resolve racing an Evict does not
	// cache what was just evicted.
	epoch uint64
}

// target is a cached, resolved sandbox with its ReverseProxy.
type target struct {
	Target
	basePath string // AgentURL's escaped path without a trailing "/"
	rp       *httputil.ReverseProxy
}

// routeKey carries a request's Route from ServeHTTP to Rewrite and
// ModifyResponse.
type routeKey struct{}

// New returns a Proxy. It starts nothing; Close releases idle connections.
func New(cfg Config, r Resolver, log *slog.Logger) *Proxy {
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	if cfg.EnvdPort == 0 {
		cfg.EnvdPort = 49983
	}
	if cfg.DialRetry == 0 {
		cfg.DialRetry = 3 * time.Second
	}
	tr := newTransport()
	return &Proxy{
		domain:     strings.Trim(strings.ToLower(cfg.Domain), "."),
		envdPort:   cfg.EnvdPort,
		autoResume: cfg.AutoResume,
		resolver:   r,
		log:        log,
		transport:  tr,
		rt:         &retryTransport{base: tr, window: cfg.DialRetry},
		buffers:    newBufferPool(),
		targets:    make(map[string]*target),
	}
}

// Close closes the proxy's idle connections to agents. Requests in flight
// continue; the caller's http.Server owns them.
func (p *Proxy) Close() { p.transport.CloseIdleConnections() }

// Evict drops what the proxy remembers of a sandbox, so its next request
// resolves it again. Call it when a sandbox is destroyed, paused or moved.
func (p *Proxy) Evict(sandboxID string) {
	p.mu.Lock()
	delete(p.targets, sandboxID)
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
		writeError(w, http.StatusNotFound, "no sandbox in request")
		return
	}
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
	ctx := r.Context()
	t, err := p.target(ctx, route.SandboxID)
	if err != nil {
		p.resolveFailed(w, r, route, err)
		return
	}
	if route.Port != p.envdPort && !t.PublicTraffic {
		got, want := r.Header.Get(HeaderTrafficToken), t.TrafficToken
		if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			writeError(w, http.StatusForbidden, "missing or invalid "+strings.ToLower(HeaderTrafficToken))
			return
		}
	}
	if t.Paused {
		if t, err = p.resume(ctx, route.SandboxID); err != nil {
			p.resolveFailed(w, r, route, err)
			return
		}
	}
	// Without full duplex, Go's HTTP/1 server drains and closes the
	// rest of the request body when the response starts, under the
	// transport still copying it upstream, which then closes the agent
	// connection mid-response. HTTP/2 answers ErrNotSupported: it is
	// full duplex already.
	_ = http.NewResponseController(w).EnableFullDuplex()
	t.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, routeKey{}, route)))
}

// resume resumes a paused sandbox when AutoResume is set, and resolves it
// again.
func (p *Proxy) resume(ctx context.Context, id string) (*target, error) {
	if p.autoResume == nil {
		return nil, fmt.Errorf("sandbox %s is paused: %w", id, runtime.ErrConflict)
	}
	if err := p.autoResume(ctx, id); err != nil {
		return nil, fmt.Errorf("resume sandbox %s: %w", id, err)
	}
	p.Evict(id)
	t, err := p.target(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.Paused {
		return nil, fmt.Errorf("sandbox %s is still paused after resume: %w", id, runtime.ErrConflict)
	}
	return t, nil
}

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
	if res.AgentURL == nil || res.AgentURL.Host == "" {
		return nil, fmt.Errorf("sandbox %s has no agent address: %w", id, runtime.ErrUnavailable)
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
	t := &target{Target: res, basePath: strings.TrimSuffix(res.AgentURL.EscapedPath(), "/")}
	t.rp = &httputil.ReverseProxy{
		Rewrite:        t.rewrite,
		Transport:      p.rt,
		BufferPool:     p.buffers,
		FlushInterval:  -1, // SSE, Connect streams, long polls: every write goes out at once
		ModifyResponse: modifyResponse,
		ErrorHandler:   func(w http.ResponseWriter, r *http.Request, err error) { p.proxyFailed(w, r, t, err) },
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelWarn),
	}
	return t
}

// rewrite sends the request to {agent}/proxy/{id}/{port}{path}?{query}.
func (t *target) rewrite(pr *httputil.ProxyRequest) {
	route := pr.In.Context().Value(routeKey{}).(Route)
	escaped := t.basePath + pathPrefix + route.SandboxID + "/" + strconv.Itoa(route.Port) + route.Path
	u := pr.Out.URL
	u.Scheme, u.Host, u.User, u.Fragment, u.RawFragment = t.AgentURL.Scheme, t.AgentURL.Host, nil, "", ""
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
	}
	pr.Out.Header.Del(HeaderTrafficToken)
	pr.Out.Header.Del(agentTokenHeader)
	if t.AgentToken != "" {
		pr.Out.Header.Set(agentTokenHeader, t.AgentToken)
	}
}

// modifyResponse keeps path-form redirects and cookies under the prefix.
func modifyResponse(resp *http.Response) error {
	route, _ := resp.Request.Context().Value(routeKey{}).(Route)
	if route.Form != FormPath {
		return nil
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		resp.Header.Set("Location", rewriteLocation(loc, route.Prefix, resp.Request.Host))
	}
	for i, c := range resp.Header["Set-Cookie"] {
		resp.Header["Set-Cookie"][i] = scopeCookie(c, route.Prefix)
	}
	return nil
}

// proxyFailed answers a request the agent did not: 502 when it could not
// be reached, 504 on a timeout, nothing when the client has gone.
func (p *Proxy) proxyFailed(w http.ResponseWriter, r *http.Request, t *target, err error) {
	if r.Context().Err() != nil {
		p.log.Debug("proxy client gone", "sandbox", t.SandboxID, "err", err)
		return
	}
	status := errorStatus(err)
	if status == http.StatusBadGateway {
		// The sandbox may have moved, or its host be down: resolve afresh.
		p.evictTarget(t)
	}
	p.log.Warn("proxy agent request failed", "sandbox", t.SandboxID, "agent", t.AgentURL.Host, "status", status, "err", err)
	msg := "sandbox host unreachable"
	if status == http.StatusGatewayTimeout {
		msg = "sandbox host did not answer in time"
	}
	writeError(w, status, msg)
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

// resolveFailed maps a resolve or resume error to an answer.
func (p *Proxy) resolveFailed(w http.ResponseWriter, r *http.Request, route Route, err error) {
	if r.Context().Err() != nil {
		p.log.Debug("proxy client gone", "sandbox", route.SandboxID, "err", err)
		return
	}
	switch {
	case errors.Is(err, runtime.ErrNotFound):
		writeError(w, http.StatusNotFound, "sandbox "+route.SandboxID+" not found")
	case errors.Is(err, runtime.ErrConflict):
		writeError(w, http.StatusConflict, "sandbox "+route.SandboxID+" is paused")
	default:
		p.log.Warn("proxy resolve failed", "sandbox", route.SandboxID, "err", err)
		writeError(w, http.StatusBadGateway, "sandbox "+route.SandboxID+" unavailable")
	}
}

// writeError writes the JSON error body E2B clients read: the code in the
// body is what the SDK reports.
func writeError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{status, msg})
}

// bufferPool recycles ReverseProxy's copy buffers, which it would otherwise
// allocate (32 KiB) for every request.
type bufferPool struct{ pool sync.Pool }

const copyBufferSize = 32 << 10

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}}
}

func (b *bufferPool) Get() []byte { return *b.pool.Get().(*[]byte) }

func (b *bufferPool) Put(buf []byte) {
	if cap(buf) == copyBufferSize {
		buf = buf[:copyBufferSize]
		b.pool.Put(&buf)
	}
}
