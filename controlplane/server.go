package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	"roost.dev/roost/dashboard"
	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/proxy"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
	"roost.dev/roost/tlscert"
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	// Domain of sandbox hostnames {port}-{sandboxID}.{domain}, returned to
	// clients as a sandbox's domain. Default "localhost".
	Domain string
	// PublicURL is where clients reach this server, e.g.
	// "http://127.0.0.1:3000". Informational: logged at start.
	PublicURL string
	// TimeoutInterval is how often expired sandboxes are looked for.
	// Default 1 s.
	TimeoutInterval time.Duration
	// ReconcileInterval is how often every host's sandboxes are compared
	// with the store. Default 10 s.
	ReconcileInterval time.Duration
	// LeaderLease is how long the leader's lease lasts unrenewed, and
	// so how soon another replica leads when the leader dies (within it
	// and a third of it). Default 3 s.
	LeaderLease time.Duration
	// ReplicaID names this replica among those sharing the store.
	// Default: the host's name and a random suffix.
	ReplicaID string
	// DownAfter is how many consecutive unanswered reconcile rounds mark a
	// host down and its sandboxes lost. Default 3.
	DownAfter int
	// CreateGrace is how long a create may take before the reconciler
	// acts on what it left: a starting record older than this is settled
	// (destroyed on its host, deleted), and a sandbox a host runs with no
	// live record is destroyed once seen so for this long. It must exceed
	// the longest create. Default 11 min: the create timeout and a minute.
	CreateGrace time.Duration
	// Local is the host agent running in this process (roost up), if any.
	// Its sandboxes are reachable from here, so envd calls and proxied
	// requests to them go straight to the sandbox, without the agent's
	// HTTP proxy: a hop less on every request.
	Local *LocalAgent
	// ExecOutputLimit bounds each of stdout and stderr in an exec
	// answer, counted as the bytes of their JSON encoding (a byte that
	// JSON escapes as \u00XX counts six), so the answer stays within
	// twice the limit whatever the sandbox prints; the rest is dropped
	// and the answer says so. Default 16 MiB.
	ExecOutputLimit int
	// TeamQuota is every team's quota where the team sets no limit of its
	// own: these limits over DefaultTeamQuota (see quotas.go). A limit
	// that cannot be valid is an error of New.
	TeamQuota store.Quota
	// RetentionInterval is how often paused sandboxes are checked against
	// their team's paused limits. Default 30 s.
	RetentionInterval time.Duration
	// Blobs is the templates' content store (layers, manifests, uploaded
	// files), shared by the control plane's replicas and, in roost up,
	// with the agent. Nil: the template build and blob routes answer 503.
	Blobs *content.Blobs
	// AuditRetention is how long audit entries are kept. Default 90 days.
	AuditRetention time.Duration
	// EventRetention is how long lifecycle events (and their webhook
	// deliveries) are kept. Default 7 days, as E2B keeps them.
	EventRetention time.Duration
	// WebhookAllowCIDRs are the ranges webhooks may reach although they
	// are private, loopback or this host's (see webhookAddrAllowed).
	// Default none.
	WebhookAllowCIDRs []netip.Prefix
	// WebhookRetryFor is how long after its event a failing delivery is
	// retried before it is given up. Default 1 h.
	WebhookRetryFor time.Duration
	// WebhookTimeout bounds one delivery attempt. Default 10 s.
	WebhookTimeout time.Duration
	// Interpreter is the code interpreter's binary (cmd/roost-interpreter)
	// for the template InterpreterTemplate, which the control plane builds
	// at its first create; "" offers no such template.
	Interpreter string
	// Registerer receives the control plane's metrics and its proxy's
	// (docs/prometheus.md); nil registers them nowhere. New fails when it
	// has them already.
	Registerer prometheus.Registerer
	// Metrics is what GET /metrics serves on the API listener (the
	// process's registry, gathered), to a bearer of MetricsToken only:
	// the listener is public, and the metrics tell the fleet's size and
	// use. Nil: /metrics is 404 there. One without the other is an
	// error of New.
	Metrics      http.Handler
	MetricsToken string
}

// LocalAgent is a host agent in the control plane's process.
type LocalAgent struct {
	// HostID is the host the agent was added as.
	HostID string
	// SandboxAddr says where a running sandbox's ports answer, and which
	// run of it answers there; errors wrap errdefs.ErrNotFound,
	// ErrConflict (paused) or ErrUnavailable. It is called on every
	// request, and must be cheap.
	SandboxAddr func(sandboxID string) (proxy.Instance, error)
	// Service is the agent's RPC service, if set: the control plane then
	// calls it directly for every unary RPC, not over HTTP (see
	// directAgent). The agent must still be added with AddHost.
	Service hostagentv1connect.HostAgentServiceHandler
}

// local reports whether sb runs on the in-process agent.
func (s *Server) local(sb store.Sandbox) bool {
	return s.cfg.Local != nil && s.cfg.Local.SandboxAddr != nil && sb.HostID == s.cfg.Local.HostID
}

// envdVersion is reported for every sandbox: the envd API roost's envd
// implements (the SDK needs >= 0.5.7).
const envdVersion = "0.6.4"

// Server is the control plane. Its HTTP handlers and methods are safe for
// concurrent use; Run owns the background loops.
type Server struct {
	cfg    Config
	leader *leadership
	// cache is store's cache, which notices from other replicas empty.
	cache *cachedStore
	// avoid is the hosts creates could not reach lately.
	avoid hostAvoidance
	// hosts is what scheduling ranks hosts by.
	hosts  hostsView
	store  store.Store
	log    *slog.Logger
	agents *agents
	// ca signs agents' certificates at registration (hosts.go).
	ca    *tlscert.ClusterCA
	proxy *proxy.Proxy
	mux   *http.ServeMux
	// sockets is the open WebSockets, which Shutdown closes (sockets.go).
	sockets sockets
	// metrics is what the server measures, and serves (prometheus.go).
	metrics *serverMetrics
	// execClient calls envd's Process.Start on the agents' RPC transport.
	execClient *http.Client
	// builds runs template builds (buildrunner.go).
	builds *buildRunner
	// filesKey signs template file upload URLs (templatefiles.go).
	filesKey []byte
	// blobLimit bounds one uploaded blob: maxBlobBytes.
	blobLimit int64
	// builtinMu makes creates of a built-in template wait for one build.
	builtinMu sync.Mutex
	// interpreter is the tar of Config.Interpreter last made (builtin.go);
	// guarded by builtinMu.
	interpreter interpreterTar
	// unnamedBlobs is held for reading while a snapshot's blobs are made
	// and not yet named by its row; garbage collection holds it for
	// writing, so that it never deletes a blob a snapshot is about to
	// name (the host's base layer every snapshot of base shares).
	unnamedBlobs sync.RWMutex
	// audit and events write the audit log and lifecycle events off the
	// requests' path (audit.go, events.go).
	audit  *auditWriter
	events *eventLog

	closeOnce sync.Once
}

// New returns a Server over st. It starts nothing: serve Handler, and call
// Run for the background loops.
func New(cfg Config, st store.Store, log *slog.Logger) (*Server, error) {
	if st == nil {
		return nil, fmt.Errorf("new control plane: no store: %w", errdefs.ErrInvalid)
	}
	quota, err := quotaDefaults(cfg.TeamQuota)
	if err != nil {
		return nil, fmt.Errorf("new control plane: %w", err)
	}
	cfg.TeamQuota = quota
	if cfg.RetentionInterval <= 0 {
		cfg.RetentionInterval = defaultRetentionInterval
	}
	if cfg.Domain == "" {
		cfg.Domain = "localhost"
	}
	cfg.Domain = strings.Trim(strings.ToLower(cfg.Domain), ".")
	if cfg.TimeoutInterval <= 0 {
		cfg.TimeoutInterval = time.Second
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = 10 * time.Second
	}
	if cfg.DownAfter <= 0 {
		cfg.DownAfter = 3
	}
	if cfg.LeaderLease <= 0 {
		cfg.LeaderLease = defaultLeaderLease
	}
	if cfg.ReplicaID == "" {
		cfg.ReplicaID = newReplicaID()
	}
	if cfg.CreateGrace <= 0 {
		cfg.CreateGrace = createTimeout + time.Minute
	}
	if cfg.ExecOutputLimit <= 0 {
		cfg.ExecOutputLimit = defaultExecOutput
	}
	operationDefaults(&cfg)
	ca, agentTLS, err := loadClusterCA(st)
	if err != nil {
		return nil, err
	}
	filesKey, err := loadFilesKey(st)
	if err != nil {
		return nil, err
	}
	cache := newCachedStore(st, log)
	s := &Server{cfg: cfg, store: cache, cache: cache, log: log, agents: newAgents(agentTLS), ca: ca, builds: newBuildRunner(), filesKey: filesKey,
		blobLimit: maxBlobBytes}
	if cfg.Local != nil && cfg.Local.Service != nil {
		s.agents.direct(cfg.Local.HostID, cfg.Local.Service, log)
	}
	if cfg.Local != nil && cfg.Local.SandboxAddr != nil {
		s.agents.client.Transport = localEnvd{next: s.agents.transport, lookup: cfg.Local.SandboxAddr}
	}
	s.execClient = &http.Client{Transport: graceTransport{next: s.agents.client.Transport}}
	if s.metrics, err = newServerMetrics(cfg, s); err != nil {
		return nil, err
	}
	s.proxy = proxy.New(proxy.Config{Domain: cfg.Domain, AutoResume: s.metrics.timeAutoResume(s.autoResume), AgentTLS: http1Only(agentTLS),
		Metrics: s.metrics.proxy}, resolver{s}, log.With("component", "proxy"))
	s.leader = &leadership{st: st, id: cfg.ReplicaID, ttl: cfg.LeaderLease, log: log}
	s.audit = newAuditWriter(st, log.With("component", "audit"))
	s.events = newEventLog(st, log.With("component", "events"))
	s.mux = s.routes()
	return s, nil
}

// Handler serves the REST API and, for every request the proxy matches
// (sandbox Host, E2b-Sandbox-Id headers or /proxy/ path), sandbox traffic;
// a signed /files URL without any of them goes to the sandbox whose envd
// access token signed it (see serveSignedFile).
func (s *Server) Handler() http.Handler {
	return s.timeOps(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route, ok := s.proxy.Match(r); ok {
			s.proxy.ServeRoute(w, r, route)
			return
		}
		if s.serveSignedFile(w, r) {
			return
		}
		s.mux.ServeHTTP(w, r)
	}))
}

// Shutdown ends the connections the HTTP server hands over to the
// control plane, which http.Server.Shutdown neither waits for nor
// closes: every WebSocket is closed with 1001 Going Away, and every
// upgraded connection the proxy carries is ended (proxy.Shutdown). New
// ones are refused. It returns once their handlers have returned, or
// when ctx ends. Call it beside http.Server.Shutdown, which drains the
// plain requests.
func (s *Server) Shutdown(ctx context.Context) error {
	var wg sync.WaitGroup
	var wsErr, proxyErr error
	wg.Go(func() { wsErr = s.sockets.shutdown(ctx) })
	wg.Go(func() { proxyErr = s.proxy.Shutdown(ctx) })
	wg.Wait()
	return errors.Join(wsErr, proxyErr)
}

// Close stops the template builds it runs (marking them failed) and
// releases idle connections to agents. It does not close the store, which
// the caller owns.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.builds.close()
		s.proxy.Close()
		s.agents.Close()
		s.audit.close()
		s.events.close()
	})
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	// Unauthenticated: a load balancer's check. It names the replica and
	// says whether it leads.
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "replica": s.leader.id, "leader": s.Leading()})
	})
	api := func(pattern string, h apiHandler) {
		mux.Handle(pattern, s.audited(auditActions[pattern], s.authenticate(h)))
	}
	api("POST /v2/sandboxes", s.createSandbox)
	api("GET /v2/sandboxes", s.listSandboxes)
	api("GET /sandboxes/{id}", s.getSandbox)
	api("DELETE /sandboxes/{id}", s.deleteSandbox)
	api("POST /sandboxes/{id}/timeout", s.setTimeout)
	api("POST /sandboxes/{id}/pause", s.pauseSandbox)
	api("POST /sandboxes/{id}/fork", s.forkSandbox)
	s.snapshotRoutes(api)
	api("POST /v2/sandboxes/{id}/connect", s.connectSandbox)
	// E2B's unversioned and deprecated sandbox routes, which its SDKs
	// before JS 2.51.0 (and the Python SDK) call.
	api("POST /sandboxes", s.createSandbox)
	api("GET /sandboxes", s.listRunningSandboxes)
	api("POST /sandboxes/{id}/connect", s.connectSandbox)
	api("POST /sandboxes/{id}/resume", s.resumeSandbox)
	api("POST /sandboxes/{id}/refreshes", s.refreshSandbox)
	s.unsupportedRoutes(api)
	s.adminRoutes(mux)
	s.operationRoutes(mux, api)
	s.volumeRoutes(mux, api)
	s.templateRoutes(mux, api)
	s.sandboxMetricsRoutes(api)
	api("GET /sandboxes/{id}/logs", s.sandboxLogs)
	api("GET /v2/sandboxes/{id}/logs", s.sandboxLogsV2)
	api("POST /v1/sandboxes/{id}/exec", s.execSandbox)
	api("GET /v1/sandboxes/{id}/exec/stream", s.execStream)
	api("GET /v1/sandboxes/{id}/pty", s.ptySession)
	api("GET /v1/sandboxes/{id}/files", s.downloadFile)
	api("PUT /v1/sandboxes/{id}/files", s.uploadFile)
	api("GET /v1/sandboxes/{id}/files/list", s.listFiles)
	api("GET /v1/sandboxes/{id}/ports", s.sandboxPorts)
	api("GET /v1/sandboxes/{id}", s.getSandboxV1)
	api("POST /v1/sandboxes/{id}/snapshot", s.snapshotSandbox)
	// Hosts are the operator's as much as any team's: the admin token
	// reads them without acting as a team.
	mux.Handle("GET /v1/hosts", s.audited("", s.authenticateOrAdmin(s.listHosts)))
	api("GET /teams", s.listTeams)
	api("GET /api-keys", s.listAPIKeys)
	api("POST /api-keys", s.createAPIKey)
	api("PATCH /api-keys/{id}", s.renameAPIKey)
	api("DELETE /api-keys/{id}", s.deleteAPIKey)
	api("POST /access-tokens", s.createAccessToken)
	api("DELETE /access-tokens/{id}", s.deleteAccessToken)
	mux.HandleFunc("GET /openapi.yaml", serveOpenAPI)
	// The web dashboard: its page at / and its assets; it calls the routes
	// above like any client.
	dash := dashboard.New()
	mux.Handle("GET /{$}", dash)
	mux.Handle("GET /ui/{asset}", dash)
	s.metricsRoutes(mux)
	mux.HandleFunc("POST /v1/hosts/register", s.registerHost)
	mux.HandleFunc("POST /v1/hosts/{id}/heartbeat", s.hostHeartbeat)
	mux.HandleFunc("GET /v1/hosts/{id}/blobs/{digest}", s.serveHostBlob)
	mux.HandleFunc("PUT /v1/hosts/{id}/blobs/{digest}", s.receiveHostBlob)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		errdefs.WriteHTTP(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// fail answers err with its category's status; unexpected errors are
// logged and their text is not shown.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	if r.Context().Err() != nil {
		return // the client is gone
	}
	b := s.errorBody(op, err, "method", r.Method, "path", r.URL.Path)
	noteError(r, b.Message)
	errdefs.WriteHTTP(w, b.Code, b.Message)
}

// errorBody is err as E2B's error body, logged by its status (attrs
// added): a 500's message is "internal error" only.
func (s *Server) errorBody(op string, err error, attrs ...any) *errdefs.Body {
	status := errdefs.HTTPStatus(err)
	msg := err.Error()
	attrs = append([]any{"op", op}, attrs...)
	switch {
	case status == http.StatusInternalServerError:
		s.log.Error("api request failed", append(attrs, "err", err)...)
		msg = "internal error"
	case status == http.StatusNotImplemented:
		s.log.Debug("api request unsupported", append(attrs, "err", err)...)
	case status >= 500:
		s.log.Warn("api request unavailable", append(attrs, "status", status, "err", err)...)
	default:
		s.log.Debug("api request refused", append(attrs, "status", status, "err", err)...)
	}
	return &errdefs.Body{Code: status, Message: msg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// CreateTeamWithKey creates a team named teamName and an API key for it,
// and returns the key's plaintext, which is stored only hashed: show it
// once. `roost up` calls it on first start.
func (s *Server) CreateTeamWithKey(ctx context.Context, teamName string) (string, error) {
	team := store.Team{ID: "team_" + randomString(10), Name: teamName}
	if err := s.store.CreateTeam(ctx, team); err != nil {
		return "", fmt.Errorf("create team %q: %w", teamName, err)
	}
	key, prefix, suffix := newCredential(store.KindAPIKey)
	k := store.APIKey{ID: "key_" + randomString(10), TeamID: team.ID, Name: "default", Hash: store.HashKey(key), Prefix: prefix, MaskSuffix: suffix}
	if err := s.store.CreateAPIKey(ctx, k); err != nil {
		return "", fmt.Errorf("create api key of team %q: %w", teamName, err)
	}
	return key, nil
}

// localTeam is the team `roost up` and `roost server` add a key given
// in their environment to.
var localTeam = store.Team{ID: "team_local", Name: "local"}

// AddLocalKey makes key, given by the operator ($ROOST_API_KEY or the
// data directory's key file), an API key of the local team, creating the
// team when needed; a key the store already knows is left as it is. A
// key in neither accepted format is refused (errdefs.ErrUnauthenticated).
func (s *Server) AddLocalKey(ctx context.Context, key string) error {
	if err := CheckAPIKeyFormat(key); err != nil {
		return err
	}
	if _, err := s.store.APIKeyByHash(ctx, store.HashKey(key)); err == nil {
		return nil
	}
	_, err := s.store.GetTeam(ctx, localTeam.ID)
	if errors.Is(err, errdefs.ErrNotFound) {
		err = s.store.CreateTeam(ctx, localTeam)
	}
	if err != nil {
		return err
	}
	prefix := key[:min(len(key), len(legacyKeyPrefix)+maskShown)]
	if strings.HasPrefix(key, apiKeyPrefix) {
		prefix = key[:len(apiKeyPrefix)+maskShown]
	}
	return s.store.CreateAPIKey(ctx, store.APIKey{
		ID: "key_" + randomString(10), TeamID: localTeam.ID, Name: "local", Hash: store.HashKey(key),
		Prefix: prefix, MaskSuffix: key[len(key)-maskShown:],
	})
}

// AddHost registers an agent the caller trusts (`roost up`'s in-process
// agent): it asks the agent for its capacity, fills in what h leaves
// zero, and stores the host as ready. h.ID, h.URL and token (the agent's
// bearer token, kept in this process's memory only: the store never holds
// it) are required; an agent that does not answer is an error.
func (s *Server) AddHost(ctx context.Context, h store.Host, token string) error {
	if h.ID == "" || h.URL == "" || token == "" {
		return fmt.Errorf("add host: id, url and token are required: %w", errdefs.ErrInvalid)
	}
	if _, err := url.Parse(h.URL); err != nil {
		return fmt.Errorf("add host %s: url: %v: %w", h.ID, err, errdefs.ErrInvalid)
	}
	s.agents.setToken(h.ID, token)
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := s.agents.For(h).GetHostInfo(ctx, connect.NewRequest(&hostagentv1.GetHostInfoRequest{}))
	if err != nil {
		return fmt.Errorf("add host %s: %w", h.ID, errdefs.FromConnect("agent host info", err))
	}
	info := resp.Msg.GetHost()
	if h.Name == "" {
		h.Name = info.GetHostname()
	}
	if h.Runtime == "" {
		h.Runtime = info.GetRuntime()
	}
	if h.CPUs == 0 {
		h.CPUs = int(info.GetCapacity().GetCpus())
	}
	if h.MemoryMB == 0 {
		h.MemoryMB = info.GetCapacity().GetMemoryMb()
	}
	if h.MaxSandboxes == 0 {
		h.MaxSandboxes = int(info.GetCapacity().GetMaxSandboxes())
	}
	if h.Capabilities == nil {
		if b, err := json.Marshal(info.GetCapabilities()); err == nil {
			h.Capabilities = b
		}
	}
	if h.VolumeDirID == "" {
		h.VolumeDirID = info.GetVolumeDirId()
	}
	h.State = store.HostReady
	if err := s.store.UpsertHost(ctx, h); err != nil {
		return fmt.Errorf("add host %s: %w", h.ID, err)
	}
	s.hostsChanged(ctx)
	s.log.Info("host added", "host", h.ID, "url", h.URL, "runtime", h.Runtime, "max_sandboxes", h.MaxSandboxes)
	return nil
}

// Run runs the background loops (timeouts, reconciler) and returns nil
// once ctx ends and they have stopped: the loops log their failures and
// carry on, so nothing makes Run fail today. Call it once.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("control plane running", "public_url", s.cfg.PublicURL, "domain", s.cfg.Domain, "replica", s.leader.id)
	s.tendBuilds(ctx) // builds a stopped control plane left
	var wg sync.WaitGroup
	wg.Go(func() { s.loop(ctx, "builds", buildLeaseRenew, s.tendBuilds) })
	wg.Go(func() { s.leader.run(ctx, s.lead) })
	wg.Go(func() { s.store.Listen(ctx, s.noticed) })
	wg.Wait()
	return nil
}

// noticed drops what a store notice says changed, on any replica.
func (s *Server) noticed(n store.Notice) {
	switch n.Topic {
	case topicSandbox:
		s.proxy.Evict(n.Key)
	case topicHosts:
		s.hosts.expire()
	case store.TopicAll:
		s.proxy.EvictAll()
		s.hosts.expire()
	}
	s.cache.noticed(n)
}

// evict drops the proxy's routes to sandboxes ids, here and on the
// other replicas (in one store notice): call it once the store records
// that the sandboxes are destroyed, paused or moved (a store notice is
// a database round trip: an eviction before the write stays local,
// s.proxy.Evict). A replica that misses the notice finds the sandbox
// gone from its agent on its next request.
func (s *Server) evict(ids ...string) {
	notices := make([]store.Notice, len(ids))
	for i, id := range ids {
		s.proxy.Evict(id)
		notices[i] = store.Notice{Topic: topicSandbox, Key: id}
	}
	announce(context.Background(), s.store, s.log, notices...)
}

// lead runs the work that must run on one replica (the leader) until
// ctx ends: the leadership is lost or the server stops.
func (s *Server) lead(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { s.loop(ctx, "timeouts", s.cfg.TimeoutInterval, s.enforceTimeouts) })
	wg.Go(func() { s.loop(ctx, "retention", s.cfg.RetentionInterval, s.enforceRetention) })
	wg.Go(func() { s.loop(ctx, "prune", pruneInterval, s.prune) })
	wg.Go(func() { newDeliverer(s).run(ctx) })
	rec := newReconciler(s)
	wg.Go(func() { s.loop(ctx, "reconcile", s.cfg.ReconcileInterval, rec.round) })
	wg.Wait()
}

// Leading says whether this replica leads now (runs the work that must
// run once).
func (s *Server) Leading() bool { return s.leader.leading.Load() }

// loop calls fn every interval until ctx ends; a panic in fn is logged
// and the loop goes on.
func (s *Server) loop(ctx context.Context, name string, interval time.Duration, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					s.log.Error("background loop panicked", "loop", name, "panic", p, "stack", string(debug.Stack()))
				}
			}()
			fn(ctx)
		}()
	}
}

// resolver finds sandboxes' agents for the proxy, from the store alone.
type resolver struct{ s *Server }

func (r resolver) Resolve(ctx context.Context, id string) (proxy.Target, error) {
	sb, err := r.s.store.LookupSandbox(ctx, id)
	if err != nil {
		return proxy.Target{}, err
	}
	switch sb.State {
	case store.SandboxRunning, store.SandboxPaused, store.SandboxStarting:
	case store.SandboxLost, store.SandboxError:
		return proxy.Target{}, fmt.Errorf("sandbox %s is %s: %w", id, sb.State, errdefs.ErrUnreachable)
	default:
		return proxy.Target{}, fmt.Errorf("sandbox %s is %s: %w", id, sb.State, errdefs.ErrNotFound)
	}
	h, err := r.s.store.GetHost(ctx, sb.HostID)
	if err != nil {
		return proxy.Target{}, fmt.Errorf("host of sandbox %s: %v: %w", id, err, errdefs.ErrUnavailable)
	}
	if h.State == store.HostDown {
		return proxy.Target{}, fmt.Errorf("host %s of sandbox %s is down: %w", h.ID, id, errdefs.ErrUnreachable)
	}
	u, err := url.Parse(h.URL)
	if err != nil {
		return proxy.Target{}, fmt.Errorf("host %s url: %v: %w", h.ID, err, errdefs.ErrUnreachable)
	}
	t := proxy.Target{
		SandboxID: id, Paused: sb.State == store.SandboxPaused, AutoResume: sb.AutoResume, AgentURL: u, AgentToken: r.s.agents.token(h.ID),
		TrafficToken: sb.TrafficAccessToken, PublicTraffic: sb.AllowPublicTraffic,
	}
	if r.s.local(sb) {
		t.Direct = r.s.cfg.Local.SandboxAddr
	}
	return t, nil
}
