// Package controlplane is the core of `roost server`: the E2B-compatible
// REST API, API-key authentication, scheduling sandboxes onto host agents,
// enforcing sandbox timeouts and reconciling the store with what the agents
// really run. All sandbox traffic (envd and user ports) is handed to the
// sandbox proxy (roost.dev/roost/proxy) on the same listener.
//
// The control plane is stateless: every fact lives in the store
// (roost.dev/roost/store), so a restart, or several control planes on one
// PostgreSQL database, lose nothing. The only in-memory state is caches
// (agent clients, the proxy's targets) and the reconciler's count of
// unanswered rounds per host and when it first saw each sandbox a host
// runs without a record (a restart only delays what they decide).
//
// Sandbox lifecycle as the API sees it: a create is recorded (state
// starting) before the agent is called, then marked running, or deleted
// when the agent fails. A sandbox whose host no longer has it, or whose
// host stopped answering, becomes "lost": the record is kept so the API
// does not pretend it still runs. Lost sandboxes are hidden from lists
// (which show running and paused ones, as E2B's do), GET shows them with
// state "lost", and DELETE removes the record and tells the host to
// destroy the sandbox if it answers now.
//
// The reconciler makes the store and the hosts converge both ways, every
// round (Config.ReconcileInterval), and logs each decision:
//   - a lost sandbox its host runs again (the host came back from a
//     network blip or an agent restart) is recovered: running or paused,
//     as the host reports it; one the host does not have stays lost until
//     it is deleted or its timeout passes, when the record goes;
//   - a running or paused record follows its host's state (paused on its
//     own timeout, say), and one the host lost is lost;
//   - a starting record older than Config.CreateGrace (the create timeout
//     and a minute) belongs to a create that never returned to a client,
//     the control plane having died under it: nobody holds the sandbox,
//     so it is destroyed on its host (unless the host is still creating
//     it) and the record deleted, not adopted;
//   - a sandbox a host runs with no live record (none, or a stopped or
//     error one) is destroyed once seen so for Config.CreateGrace, which
//     covers a create in flight: this is how a sandbox deleted while its
//     host was unreachable is destroyed when the host comes back, and why
//     nothing runs for long that the store does not know about.
//
// A signed /files URL of a secure sandbox (E2B's downloadUrl/uploadUrl)
// that reaches the API's own host without the proxy's routing (the SDK
// builds it on E2B_SANDBOX_URL, and whoever fetches it sends no sandbox
// headers) goes to the running or paused sandbox whose envd access token
// reproduces its signature (wire.FileSignature); envd then checks the
// signature and its expiry as it does for any. A signature no sandbox
// reproduces is 401. In domain mode the URL's host names the sandbox.
//
// The package talks to agents only over their Connect API, on its own HTTP
// transport, never through agent code; it imports no runtime driver. It
// does not serve TLS, run the http.Server, or start agents (cmd/roost does:
// with --tls the server is HTTPS, HTTP/2 included, and Config.Domain is
// where api.{domain} and the sandbox hosts live; Config.PublicURL is then
// https://api.{domain}).
// Agents on other machines register with a one-time token
// (POST /v1/hosts/register) and heartbeat with their own token; an
// in-process agent is added with AddHost.
//
// E2B's unversioned routes, which its JS SDK before 2.51.0 and its
// Python SDK call, share the /v2 handlers where E2B's description gives
// them the same contract (POST /sandboxes creates, POST
// /sandboxes/{id}/connect connects); the deprecated list (GET /sandboxes:
// running sandboxes only, unpaged), resume (409 when running) and
// refreshes (extends, never shortens) are their own small handlers. E2B's
// routes for features roost lacks (network update, secrets, nodes) answer 501
// naming the feature, never "no route". Volumes: see volumes.go.
//
// Many teams (docs/operations.md): an operator token (X-Admin-Token,
// admin.go) serves the operator's routes (teams, their keys and quotas,
// E2B's /admin routes) and, with X-Team-ID, acts as that team on every
// team route. Every create, kill, pause, resume, key, team and webhook
// change is an audit entry (audit.go: who, when, from where, the status),
// and every state change of a sandbox a lifecycle event (events.go:
// E2B's events API, an SSE stream, webhooks). Both are written off the
// request's path by a queue of their own, in order; the webhook
// deliverer (webhookdelivery.go, Run's) sends each webhook its events in
// order, signed, retried with backoff, and never holds up a sandbox
// operation. Team metrics replay the events back from the running count.
//
// roost's own /v1 sandbox endpoints reach the sandbox's envd through its
// agent's /proxy/{id}/{envd port}/ path on the RPC transport: POST /v1/sandboxes/{id}/exec runs a command to its
// end (envd's Process.Start; the timeout is envd's Connect deadline, so
// envd kills the command; output is capped per stream), GET and PUT
// /v1/sandboxes/{id}/files stream a file from and to envd's /files, and
// GET /v1/sandboxes/{id}/files/list lists a directory, and
// GET /v1/sandboxes/{id}/ports lists envd's /ports. GET
// /v1/sandboxes/{id}/exec/stream and /pty are WebSockets over envd's
// streaming Process calls: a command's output as it comes, stdin and
// signals; a terminal with resize and reattach. Server.Shutdown closes
// them with 1001 (going away), and has the proxy end its upgraded
// connections: http.Server.Shutdown does neither. On these, a paused
// sandbox is 409 and a lost one 502 (the proxy answers 502 to both, as
// E2B's SDKs expect of the sandbox route: see package proxy). /v1/templates,
// /v1/hosts and /v1/api-keys list templates and hosts and manage keys.
//
// GET /v1/sandboxes/{id} is E2B's detail plus what backs the sandbox: its
// host's runtime, the capabilities the agent reported for it, and whether
// it is hibernated. POST /v1/sandboxes/{id}/snapshot hibernates a running
// or paused sandbox through the agent's PauseSandbox with hibernate and
// records it paused, so E2B's connect and auto-resume restore it through
// ResumeSandbox; a runtime without the snapshot capability is 409, from
// the stored capabilities before the agent is asked, or from the agent's
// unimplemented when the host reported none. E2B's own endpoints never
// show roost's additions.
//
// Templates (docs/templates.md): content templates live in the store
// (templates, builds, tags, uploaded files) and Config.Blobs (layers,
// manifests, tars), and hosts' own trees (base) are asked of the hosts.
// E2B's template API builds them: POST /v3/templates makes a build, the
// files route hands out signed upload URLs, a trigger turns the request
// into a build.Spec and a goroutine of the Server (not the request) runs
// it on a host's BuildTemplate stream, appending its log to the store and
// marking it ready (its tags moved to it) or error with E2B's reason. A
// build holds a lease the server renews, so one left by a stopped control
// plane is failed. A create naming a content template (ID, name or
// name:tag) sends the agent its manifest as a TemplateRef; agents fetch
// blobs from /v1/hosts/{id}/blobs with their heartbeat token. The package
// keeps content; it never builds or unpacks a tree.
//
// Sandbox metrics (metrics.go, docs/metrics.md) are the history each
// host's agent keeps (GetSandboxMetrics): E2B's routes choose the range
// and E2B's step and ask the sandbox's host; GET /v1/sandboxes/{id}/metrics
// adds the network and each point's resolution. A killed sandbox, whose
// record is gone, is asked of every host with the team as its owner.
//
// Errors: handlers wrap an errdefs category and answer through fail,
// which asks errdefs for the status and writes E2B's error body; agent
// calls' errors come back into categories through errdefs.FromConnect.
// The package writes no status of its own for an error.
//
// Metrics (prometheus.go, docs/prometheus.md) go in Config.Registerer:
// create, resume and exec latencies by route, the proxy's traffic, and
// sandboxes and hosts as the store holds them, asked at scrape time. GET
// /metrics serves Config.Metrics to the bearer of Config.MetricsToken
// only, and is no route without one: the API listener is public. No
// series is labelled by sandbox or team.
//
// Hosts are marked down by the reconciler when their agent stops
// answering its ListSandboxes, not by missed heartbeats (which record
// usage): the same failure, seen from the side that must act on it.
package controlplane
