// Package proxy is roost's reverse proxy for sandbox traffic. Proxy is the
// control plane's: it carries all sandbox traffic (envd's port and any
// user port) to the host agent that runs the sandbox, or straight to the
// sandbox when that agent runs in the same process. Upstream, DialError,
// UpstreamError and WriteUpstreamError are the core it forwards through,
// which the host agent's /proxy/ endpoint uses as well: the connection
// pools, the dialer, and how a failed round trip is classified and
// answered.
//
// A request names its sandbox and port in one of three ways (see Match):
// the Host header {port}-{sandboxID}.{domain}, the headers E2b-Sandbox-Id
// and E2b-Sandbox-Port (what E2B SDKs send when E2B_SANDBOX_URL is set), or
// the path /proxy/{sandboxID}/{port}/.... The proxy resolves the sandbox to
// its agent through a Resolver, checks the traffic token of private user
// ports, and forwards to {agent}/proxy/{id}/{port}{path}, keeping the path's
// escaping, a trailing slash, the query and the client's Host header exactly
// as sent. For the path form it rewrites Location headers so that browsers
// stay under the /proxy/{id}/{port} prefix; as that form puts every sandbox
// on the control plane's origin, its responses carry
// Content-Security-Policy: sandbox (an opaque origin, so one sandbox's page
// cannot read another's or the control plane's), Set-Cookie is dropped and
// the client's cookies are not forwarded. Browsers belong on the
// subdomain form, an origin per sandbox port. Responses stream unbuffered;
// WebSocket upgrades pass through. While a sandbox server that has just
// started refuses connections (the agent answers 502), idempotent requests
// are retried with backoff for a short while (each refusal also asks the
// sandbox's envd, which looks for new loopback servers only every 30 s
// when idle, to look now: GET wire.EnvdScanPath), but not once the sandbox is
// gone (killed mid-retry: E2B's SDKs probe /health right after a stream
// breaks and expect a prompt 502).
//
// A sandbox that does not run answers 502 (errdefs.ErrUnreachable, through
// notRunningError), with {"code": 502, "message": "sandbox {id} was not
// found"} or "... is paused": one the resolver does not know (never
// created, killed, ended at its timeout), and a paused one without
// auto-resume. This is deliberate, and not 404 or 409 as on the REST
// API: E2B's SDKs read 502 from the sandbox route as "not running"
// (isRunning() is false on 502 from envd's /health and throws on any
// other failure; other envd calls turn 502, and Connect's unavailable,
// into their "sandbox timed out or was killed" error), and E2B's own proxy
// answers an unknown sandbox 502. A paused sandbox with auto-resume is
// resumed and served instead; a resume that fails answers 502 too.
//
// Requests arrive over HTTP/1.1 or HTTP/2 (h2c, or over TLS in domain
// mode, where cmd/roost terminates TLS for api.{domain} and every
// {port}-{sandboxID}.{domain}); the proxy forwards both the same way, over
// HTTP/1.1 upstream, and flushes every write of a response of unknown
// length, so Connect server streams (process output, watches) and PTYs
// stream through either.
//
// Proxy traffic runs on the package's own HTTP/1.1 transports and
// connection pools (Upstream), never on the RPC transport the control
// plane uses to drive agents, so a flood of proxied bytes cannot queue
// behind (or in front of) PTY and exec streams. Requests straight to a
// sandbox that have no body and ask for no upgrade (most GETs) make their
// round trip in the handler's goroutine, on connections of their own
// (inlineTransport): http.Transport's two goroutines per connection cost
// more than the rest of a small request's proxying.
//
// The connections protocol upgrades hand over (WebSockets) are the
// http.Server's no longer, so Shutdown ends them: a WebSocket gets a
// close frame with 1001 (going away) between two of the sandbox's
// frames, then its connection closes; new upgrades are refused (503).
// upgrade.go says why that is as far as a byte relay goes.
//
// Metrics (NewMetrics, Config.Metrics) count requests by kind (envd's port
// or another) and status class, and their bytes as they flow, an upgraded
// connection's too; never by sandbox.
//
// The package does not authenticate envd requests (envd checks its own
// X-Access-Token), does not know how sandboxes are placed or stored (the
// Resolver does), does not serve non-proxy traffic (the caller routes with
// Match), and does not run an http.Server (the caller sets its timeouts).
// It imports no agent, control-plane or runtime code: only errdefs (its
// errors' categories and E2B's error body), wire (header names, envd's
// port) and bufpool.
package proxy
