package wire

// EnvdPort is where envd listens in every sandbox (E2B's contract).
const EnvdPort = 49983

// EnvdScanPath is what a proxy GETs from envd, without a token, when a
// sandbox's port refuses a connection: like every envd request but
// /health, authorised or not, it makes envd look for new loopback
// servers to forward at once, which it does only every 30 s when idle.
const EnvdScanPath = "/ports"

// InterpreterPort is where a code-interpreter sandbox serves
// @e2b/code-interpreter's routes (E2B's contract).
const InterpreterPort = 49999

// Headers of E2B's wire contract.
const (
	// HeaderAPIKey carries a team's API key to the REST API; an access
	// token goes in "Authorization: Bearer" instead.
	HeaderAPIKey = "X-API-Key"
	// HeaderTeamID names the team a request with an access token acts
	// for; it must be the token's team.
	HeaderTeamID = "X-Team-ID"
	// HeaderAdminToken carries an operator's token (E2B's
	// AdminApiKeyAuth): it acts for every team, for the team named in
	// X-Team-ID on the team routes.
	HeaderAdminToken = "X-Admin-Token"
	// HeaderAccessToken carries a sandbox's envd access token.
	HeaderAccessToken = "X-Access-Token"
	// HeaderSandboxID and HeaderSandboxPort route a request to a sandbox's
	// port: the E2B SDKs send them on every envd request when
	// E2B_SANDBOX_URL is set.
	HeaderSandboxID   = "E2b-Sandbox-Id"
	HeaderSandboxPort = "E2b-Sandbox-Port"
	// HeaderTrafficToken carries a sandbox's traffic token to its private
	// ports (network.allowPublicTraffic: false).
	HeaderTrafficToken = "E2b-Traffic-Access-Token"
)

// Headers between roost's own processes.
const (
	// HeaderAgentToken carries a host agent's token without taking the
	// Authorization header, which a proxied request may need for the
	// sandbox's own server. The agent also accepts "Authorization: Bearer".
	HeaderAgentToken = "Roost-Agent-Token"
	// HeaderProxyError marks an agent's 502 whose cause is in its value:
	// ProxyErrorDial means the sandbox's port refused the connection (a
	// server still starting), which the control plane's proxy may retry;
	// a 502 without it came from the sandbox's own server.
	HeaderProxyError = "Roost-Proxy-Error"
	ProxyErrorDial   = "dial"
)

// MovePath is an agent's route for moving a hibernated sandbox between
// hosts, followed by the sandbox's ID: GET exports it (a tar stream), PUT
// imports such a stream, DELETE cancels a move whose export was sent.
const MovePath = "/moves/"

// ProxyPrefix starts every proxied path, on the control plane and on an
// agent: /proxy/{sandboxID}/{port}/{rest...}.
const ProxyPrefix = "/proxy/"

// The WebSocket subprotocols of roost's API (the exec and PTY sockets).
// A browser cannot set headers on a WebSocket, so it offers its
// credential as a subprotocol beside WebSocketProtocol, the one the
// server selects: WebSocketKeyPrefix+key for an API key, or
// WebSocketAdminPrefix+token (and WebSocketTeamPrefix+team to act as a
// team) for the operator. Clients that can set headers send them instead.
const (
	WebSocketProtocol    = "roost"
	WebSocketKeyPrefix   = "roost.key."
	WebSocketAdminPrefix = "roost.admin."
	WebSocketTeamPrefix  = "roost.team."
)
