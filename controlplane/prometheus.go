package controlplane

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/proxy"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// The control plane's Prometheus series (docs/prometheus.md). None is
// labelled by sandbox or team: a fleet's sandboxes would each be a
// series, and a scrape would tell who runs what. Hosts are few, and are
// labels.
//
// Sandbox and host counts are asked of the store at scrape time, not
// kept as counts in memory: the store is the only truth every replica
// shares (a sandbox one replica creates, another's reconciler may lose),
// counts kept in memory would start at zero after a restart, and the
// state changes happen in too many places to count reliably. A scrape
// costs one GROUP BY and the hosts' list, shared for statsTTL by the
// scrapes that follow: a pair of Prometheus servers scraping together,
// or a token holder asking in a loop, costs the database one query a
// second at most.

// statsTTL is how long a scrape's store counts serve later scrapes.
const statsTTL = time.Second

// statsTimeout bounds the store queries of one scrape.
const statsTimeout = 5 * time.Second

// opRoutes names the API routes whose latency
// roost_controlplane_operation_duration_seconds records, by mux pattern.
var opRoutes = map[string]string{
	"POST /v2/sandboxes":              "create",
	"POST /sandboxes":                 "create",
	"POST /v2/sandboxes/{id}/connect": "resume",
	"POST /sandboxes/{id}/connect":    "resume",
	"POST /sandboxes/{id}/resume":     "resume",
	"POST /v1/sandboxes/{id}/exec":    "exec",
}

// Routes of operations that are not API routes, the route label's values.
const (
	routeAutoResume = "proxy auto-resume"
	routeEnvdStart  = "proxy envd process.Process/Start"
)

// envdStartPath is envd's Connect method that starts a process.
const envdStartPath = "/process.Process/Start"

// serverMetrics is the control plane's metrics, registered in
// Config.Registerer, and what GET /metrics serves.
type serverMetrics struct {
	ops *prometheus.HistogramVec
	// proxy is the sandbox proxy's (nil when there is no registerer).
	proxy *proxy.Metrics
	// handler serves GET /metrics behind token; nil: 404.
	handler http.Handler
	token   string
}

func newServerMetrics(cfg Config, s *Server) (*serverMetrics, error) {
	switch {
	case cfg.Metrics != nil && cfg.MetricsToken == "":
		return nil, fmt.Errorf("new control plane: metrics on the API listener need a token (the listener is public; the metrics tell the fleet's size and use): %w", errdefs.ErrInvalid)
	case cfg.Metrics == nil && cfg.MetricsToken != "":
		return nil, fmt.Errorf("new control plane: a metrics token but no metrics to serve: %w", errdefs.ErrInvalid)
	}
	m := &serverMetrics{
		ops: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "roost_controlplane_operation_duration_seconds",
			Help: "Time the control plane took to answer a sandbox create, resume or exec, by op, route (the API route, or the proxy's auto-resume or envd process start: until envd's answer begins) and status class.",
			// 5 ms to 5 min.
			Buckets: prometheus.ExponentialBuckets(0.005, 2.5, 13),
		}, []string{"op", "route", "code"}),
		handler: cfg.Metrics,
		token:   cfg.MetricsToken,
	}
	if cfg.Registerer == nil {
		return m, nil
	}
	var err error
	if m.proxy, err = proxy.NewMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("new control plane: register proxy metrics: %w", err)
	}
	leader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roost_controlplane_leader",
		Help: "1 while this replica leads (runs the timeouts, retention, pruning, webhook delivery and reconciling), 0 otherwise.",
	}, func() float64 {
		if s.Leading() {
			return 1
		}
		return 0
	})
	for _, c := range []prometheus.Collector{m.ops, &storeCollector{s: s}, leader} {
		if err := cfg.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("new control plane: register metrics: %w", err)
		}
	}
	return m, nil
}

// metricsRoutes adds GET /metrics: the process's metrics, for a bearer
// of the operator's token.
func (s *Server) metricsRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /metrics", s.serveMetrics)
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	m := s.metrics
	if m.handler == nil {
		// As any unknown route: nothing says there are metrics here.
		errdefs.WriteHTTP(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
		return
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(m.token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="roost metrics"`)
		errdefs.WriteHTTP(w, http.StatusUnauthorized, "missing or invalid metrics token (Authorization: Bearer)")
		return
	}
	m.handler.ServeHTTP(w, r)
}

// timeOps wraps the server's handler: requests that create, resume or
// exec are timed. Other requests pass untouched, at the cost of a method
// and path check (a proxy Match, only for a POST whose path could be
// one of them).
func (s *Server) timeOps(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op, route, untilHeader := s.classifyOp(r)
		if op == "" {
			next.ServeHTTP(w, r)
			return
		}
		rec := &opRecorder{ResponseWriter: w, start: time.Now(), untilHeader: untilHeader}
		next.ServeHTTP(rec, r)
		if rec.took == 0 {
			rec.took = time.Since(rec.start)
		}
		s.metrics.ops.WithLabelValues(op, route, proxy.StatusClass(rec.status)).Observe(rec.took.Seconds())
	})
}

// classifyOp says which operation r is, by its route; untilHeader:
// time it until the answer's header (a stream's start), not to its end.
func (s *Server) classifyOp(r *http.Request) (op, route string, untilHeader bool) {
	if r.Method != http.MethodPost {
		return "", "", false
	}
	p := r.URL.Path
	if strings.HasSuffix(p, envdStartPath) {
		if rt, ok := s.proxy.Match(r); ok && rt.Port == wire.EnvdPort && rt.Path == envdStartPath {
			return "exec", routeEnvdStart, true
		}
		return "", "", false
	}
	if !strings.HasPrefix(p, "/sandboxes") && !strings.HasPrefix(p, "/v2/sandboxes") && !strings.HasPrefix(p, "/v1/sandboxes/") {
		return "", "", false
	}
	if _, ok := s.proxy.Match(r); ok {
		return "", "", false // a sandbox's own server's path
	}
	_, pattern := s.mux.Handler(r)
	if op := opRoutes[pattern]; op != "" {
		return op, pattern, false
	}
	return "", "", false
}

// timeAutoResume times the proxy's resumes of paused sandboxes.
func (m *serverMetrics) timeAutoResume(resume func(context.Context, string) error) func(context.Context, string) error {
	return func(ctx context.Context, id string) error {
		start := time.Now()
		err := resume(ctx, id)
		code := "2xx"
		if err != nil {
			code = proxy.StatusClass(errdefs.HTTPStatus(err))
		}
		m.ops.WithLabelValues("resume", routeAutoResume, code).Observe(time.Since(start).Seconds())
		return err
	}
}

// opRecorder remembers an answer's status (the audit log and the
// operations' timings read it) and, when asked, when its
// header went out.
type opRecorder struct {
	http.ResponseWriter
	start       time.Time
	untilHeader bool
	status      int           // the final status; 0 until written
	took        time.Duration // until the header, when untilHeader
}

func (w *opRecorder) WriteHeader(code int) {
	w.header(code)
	w.ResponseWriter.WriteHeader(code)
}

func (w *opRecorder) Write(b []byte) (int, error) {
	w.header(http.StatusOK)
	return w.ResponseWriter.Write(b)
}

func (w *opRecorder) header(code int) {
	if w.status != 0 || code < 200 {
		return
	}
	w.status = code
	if w.untilHeader {
		w.took = time.Since(w.start)
	}
}

// Unwrap lets http.ResponseController reach the connection (flushes of
// a stream, full duplex).
func (w *opRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// storeCollector reports the sandboxes and hosts the store holds, asked
// at scrape time (see the top of this file).
type storeCollector struct {
	s *Server

	mu      sync.Mutex // guards at, metrics and err; held while the store is asked
	at      time.Time
	metrics []prometheus.Metric
	err     error
}

var (
	sandboxesDesc = prometheus.NewDesc("roost_controlplane_sandboxes",
		"Sandboxes the store holds, by state and their host's runtime (\"\" for a host it no longer has).", []string{"state", "runtime"}, nil)
	hostInfoDesc = prometheus.NewDesc("roost_controlplane_host_info",
		"A registered host: its name and runtime (always 1).", []string{"host", "name", "runtime"}, nil)
	hostStateDesc = prometheus.NewDesc("roost_controlplane_host_state",
		"A host's scheduling state: 1 for the state it is in, 0 for the others.", []string{"host", "state"}, nil)
	hostCPUsDesc = prometheus.NewDesc("roost_controlplane_host_cpus",
		"CPUs a host reported.", []string{"host"}, nil)
	hostMemoryDesc = prometheus.NewDesc("roost_controlplane_host_memory_bytes",
		"Memory a host reported.", []string{"host"}, nil)
	hostMaxDesc = prometheus.NewDesc("roost_controlplane_host_max_sandboxes",
		"How many sandboxes a host can run at once.", []string{"host"}, nil)
	hostSandboxesDesc = prometheus.NewDesc("roost_controlplane_host_sandboxes",
		"Sandboxes of a host the store holds, by state.", []string{"host", "state"}, nil)
	hostVCPUsDesc = prometheus.NewDesc("roost_controlplane_host_sandbox_vcpus",
		"vCPUs given to a host's starting and running sandboxes.", []string{"host"}, nil)
	hostSandboxMemoryDesc = prometheus.NewDesc("roost_controlplane_host_sandbox_memory_bytes",
		"Memory given to a host's starting and running sandboxes.", []string{"host"}, nil)
	hostHeartbeatDesc = prometheus.NewDesc("roost_controlplane_host_last_heartbeat_timestamp_seconds",
		"When a host last heartbeat (Unix time); absent for a host that does not heartbeat (roost up's).", []string{"host"}, nil)
)

// sandboxStates are the states every host reports a count of, zero too;
// others appear when some sandbox has them.
var sandboxStates = []store.SandboxState{store.SandboxStarting, store.SandboxRunning, store.SandboxPaused, store.SandboxLost}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sandboxesDesc, hostInfoDesc, hostStateDesc, hostCPUsDesc, hostMemoryDesc, hostMaxDesc,
		hostSandboxesDesc, hostVCPUsDesc, hostSandboxMemoryDesc, hostHeartbeatDesc} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if time.Since(c.at) >= statsTTL {
		ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
		c.metrics, c.err = c.read(ctx)
		cancel()
		c.at = time.Now()
	}
	metrics, err := c.metrics, c.err
	c.mu.Unlock()
	if err != nil {
		// The scrape says so (promhttp reports it) and serves the rest.
		ch <- prometheus.NewInvalidMetric(sandboxesDesc, err)
		return
	}
	for _, m := range metrics {
		ch <- m
	}
}

// read asks the store for the sandboxes and hosts and makes the series.
func (c *storeCollector) read(ctx context.Context) ([]prometheus.Metric, error) {
	hosts, err := c.s.store.ListHosts(ctx)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	counts, err := c.s.store.SandboxCounts(ctx)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	var out []prometheus.Metric
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		out = append(out, prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...))
	}
	type runtimeState struct {
		runtime string
		state   store.SandboxState
	}
	byRuntime := map[runtimeState]int{}
	runtimeOf := map[string]string{}
	type hostUse struct {
		byState  map[store.SandboxState]int
		vcpus    int
		memoryMB int64
	}
	use := map[string]*hostUse{}
	for _, h := range hosts {
		runtimeOf[h.ID] = h.Runtime
		use[h.ID] = &hostUse{byState: map[store.SandboxState]int{}}
		for _, st := range sandboxStates {
			byRuntime[runtimeState{h.Runtime, st}] += 0
		}
	}
	for _, n := range counts {
		byRuntime[runtimeState{runtimeOf[n.HostID], n.State}] += n.N
		u := use[n.HostID]
		if u == nil {
			continue // a host the store no longer has: no host series
		}
		u.byState[n.State] += n.N
		if n.State == store.SandboxStarting || n.State == store.SandboxRunning {
			u.vcpus += n.VCPUs
			u.memoryMB += n.MemoryMB
		}
	}
	for k, n := range byRuntime {
		gauge(sandboxesDesc, float64(n), string(k.state), k.runtime)
	}
	for _, h := range hosts {
		gauge(hostInfoDesc, 1, h.ID, h.Name, h.Runtime)
		for _, st := range []store.HostState{store.HostReady, store.HostDraining, store.HostDown} {
			v := 0.0
			if h.State == st {
				v = 1
			}
			gauge(hostStateDesc, v, h.ID, string(st))
		}
		gauge(hostCPUsDesc, float64(h.CPUs), h.ID)
		gauge(hostMemoryDesc, float64(h.MemoryMB<<20), h.ID)
		gauge(hostMaxDesc, float64(h.MaxSandboxes), h.ID)
		u := use[h.ID]
		for _, st := range sandboxStates {
			u.byState[st] += 0
		}
		for st, n := range u.byState {
			gauge(hostSandboxesDesc, float64(n), h.ID, string(st))
		}
		gauge(hostVCPUsDesc, float64(u.vcpus), h.ID)
		gauge(hostSandboxMemoryDesc, float64(u.memoryMB<<20), h.ID)
		if !h.LastHeartbeat.IsZero() {
			gauge(hostHeartbeatDesc, float64(h.LastHeartbeat.UnixNano())/1e9, h.ID)
		}
	}
	return out, nil
}
