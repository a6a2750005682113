package controlplane

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/proxy"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// rpcTimeout bounds one agent call; creates may build a template on first
// use and get longer.
const (
	rpcTimeout    = 60 * time.Second
	createTimeout = 10 * time.Minute
)

// agents hands out Connect clients for hosts. All of them share one HTTP
// transport, reserved for RPC: proxied sandbox traffic has its own in the
// proxy package, so neither can starve the other.
//
// Registered agents are called over mutual TLS (https URLs): the
// transport presents the control plane's client certificate and trusts
// agents certified by the cluster CA only, for the address they
// registered. Agents added in-process (AddHost: roost up, tests) are
// called over plain HTTP on loopback with a bearer token that lives in
// this process's memory only, never in the store.
type agents struct {
	transport *http.Transport
	client    *http.Client

	mu      sync.Mutex // guards clients and tokens
	clients map[string]agentClient
	// tokens are the bearer tokens of in-process agents, by host ID.
	tokens map[string]string
	// local is the service of the agent in this process, called directly
	// for host localID (nil: none).
	local   hostagentv1connect.HostAgentServiceHandler
	localID string
	log     *slog.Logger
}

// agentClient is a cached client and what it was made for.
type agentClient struct {
	url, token string
	c          hostagentv1connect.HostAgentServiceClient
}

func newAgents(tlsConfig *tls.Config) *agents {
	tr := &http.Transport{
		Proxy:                 nil,        // agents are reached directly, never via HTTP_PROXY
		DialContext:           proxy.Dial, // to sandboxes too, for the in-process agent's (localEnvd)
		TLSClientConfig:       tlsConfig,
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // creates can take minutes; contexts bound calls
	}
	return &agents{transport: tr, client: &http.Client{Transport: tr}, clients: map[string]agentClient{}, tokens: map[string]string{}}
}

// direct has the client of host hostID call svc, the service of the
// agent in this process, directly (directAgent).
func (a *agents) direct(hostID string, svc hostagentv1connect.HostAgentServiceHandler, log *slog.Logger) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.local, a.localID, a.log = svc, hostID, log
	clear(a.clients)
}

// setToken keeps the bearer token of an in-process agent.
func (a *agents) setToken(hostID, token string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens[hostID] = token
}

// token is the bearer token to present to host h: "" for a registered
// agent, whose link is authenticated by certificates.
func (a *agents) token(hostID string) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tokens[hostID]
}

// For returns the client of host h.
func (a *agents) For(h store.Host) hostagentv1connect.HostAgentServiceClient {
	a.mu.Lock()
	defer a.mu.Unlock()
	token := a.tokens[h.ID]
	if c, ok := a.clients[h.ID]; ok && c.url == h.URL && c.token == token {
		return c.c
	}
	var c hostagentv1connect.HostAgentServiceClient = hostagentv1connect.NewHostAgentServiceClient(a.client, h.URL,
		connect.WithInterceptors(tokenInterceptor(token)), uncompressed)
	if a.local != nil && h.ID == a.localID {
		c = directAgent{HostAgentServiceClient: c, svc: a.local, log: a.log}
	}
	a.clients[h.ID] = agentClient{url: h.URL, token: token, c: c}
	return c
}

// uncompressed keeps the agent link's answers uncompressed: a Connect
// client asks for gzip by default, and then every answer is packed by
// its agent and unpacked here (a fresh 32 KiB window each time) for
// bytes a data centre's network carries cheaply. At 100 hosts and 50
// creates a second it was a third of the fake agents' CPU and a few
// per cent of the control plane's. Requests go uncompressed by default
// already.
var uncompressed = connect.WithAcceptCompression("gzip", nil, nil)

func (a *agents) Close() { a.transport.CloseIdleConnections() }

// tokenInterceptor sends an in-process agent's token with every call,
// unary and streaming (BuildTemplate) alike.
type tokenInterceptor string

func (t tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if t != "" {
			req.Header().Set(wire.HeaderAgentToken, string(t))
		}
		return next(ctx, req)
	}
}

func (t tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if t != "" {
			conn.RequestHeader().Set(wire.HeaderAgentToken, string(t))
		}
		return conn
	}
}

func (t tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}
