package controlplane

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
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
type agents struct {
	transport *http.Transport
	client    *http.Client

	mu      sync.Mutex // guards clients
	clients map[string]agentClient
}

// agentClient is a cached client and what it was made for.
type agentClient struct {
	url, token string
	c          hostagentv1connect.HostAgentServiceClient
}

func newAgents() *agents {
	tr := &http.Transport{
		Proxy:                 nil, // agents are reached directly, never via HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // creates can take minutes; contexts bound calls
	}
	return &agents{transport: tr, client: &http.Client{Transport: tr}, clients: map[string]agentClient{}}
}

// For returns the client of host h.
func (a *agents) For(h store.Host) hostagentv1connect.HostAgentServiceClient {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[h.ID]; ok && c.url == h.URL && c.token == h.Token {
		return c.c
	}
	token := h.Token
	c := hostagentv1connect.NewHostAgentServiceClient(a.client, h.URL, connect.WithInterceptors(tokenInterceptor(token)))
	a.clients[h.ID] = agentClient{url: h.URL, token: token, c: c}
	return c
}

func (a *agents) Close() { a.transport.CloseIdleConnections() }

func tokenInterceptor(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set(wire.HeaderAgentToken, token)
			}
			return next(ctx, req)
		}
	}
}
