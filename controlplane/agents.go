package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/gen/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/store"
)

// agentTokenHeader carries the agent's token (the agent also accepts a
// Bearer Authorization header).
const agentTokenHeader = "Roost-Agent-Token"

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
	c          hostagentv1connect.HostAgentClient
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
func (a *agents) For(h store.Host) hostagentv1connect.HostAgentClient {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c, ok := a.clients[h.ID]; ok && c.url == h.URL && c.token == h.Token {
		return c.c
	}
	token := h.Token
	c := hostagentv1connect.NewHostAgentClient(a.client, h.URL, connect.WithInterceptors(tokenInterceptor(token)))
	a.clients[h.ID] = agentClient{url: h.URL, token: token, c: c}
	return c
}

func (a *agents) Close() { a.transport.CloseIdleConnections() }

func tokenInterceptor(token string) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set(agentTokenHeader, token)
			}
			return next(ctx, req)
		}
	}
}

// agentError turns an agent call's error into the runtime categories, so
// the API maps it with httpStatus: not_found → ErrNotFound, invalid_argument
// → ErrInvalid, resource_exhausted and unreachable agents → ErrUnavailable.
func agentError(op string, err error) error {
	if err == nil {
		return nil
	}
	var cat error
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		cat = errdefs.ErrNotFound
	case connect.CodeInvalidArgument, connect.CodeOutOfRange:
		cat = errdefs.ErrInvalid
	case connect.CodeAlreadyExists, connect.CodeFailedPrecondition, connect.CodeAborted:
		cat = errdefs.ErrConflict
	case connect.CodeUnimplemented:
		cat = errdefs.ErrUnsupported
	case connect.CodeResourceExhausted, connect.CodeUnavailable, connect.CodeDeadlineExceeded, connect.CodeCanceled:
		cat = errdefs.ErrUnavailable
	default:
		var ce *connect.Error
		if !errors.As(err, &ce) {
			cat = errdefs.ErrUnavailable // transport failure: the agent did not answer
		}
	}
	if cat == nil {
		return fmt.Errorf("agent %s: %w", op, err)
	}
	return fmt.Errorf("agent %s: %w: %w", op, cat, err)
}
