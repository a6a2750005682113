package controlplane

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/proxy"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// Bounds of what the control plane reads from an envd, which the
// sandbox's root can replace with anything.
const (
	// maxEnvdMessage bounds one Connect message from envd: a process
	// event carries at most 32 KiB of output (envd's chunk), so this
	// leaves room for any genuine envd.
	maxEnvdMessage = 4 << 20
	// maxListMessage bounds a directory listing, one message.
	maxListMessage = 16 << 20
)

// envdClientOptions are the options of every Connect client to envd: a
// read limit per message, and no compression, so that a small message
// cannot unpack into a large one (connect-go decompresses a message
// whole, and past the limit it still unpacks the rest to count it).
// envd compresses nothing unless asked.
func envdClientOptions(readMax int) []connect.ClientOption {
	return []connect.ClientOption{connect.WithReadMaxBytes(readMax), connect.WithAcceptCompression("gzip", nil, nil)}
}

// envdTarget is how the control plane reaches one sandbox's envd: through
// its agent's /proxy/{id}/{envd port}/ path, with the agent's token and the
// sandbox's envd access token, on the RPC transport.
type envdTarget struct {
	sandboxID string
	base      string // URL of envd's root through the agent
	header    http.Header
}

// envdOf resolves sb's envd through its host. A host that is down, or a
// record the host cannot serve, is ErrUnreachable.
func (s *Server) envdOf(ctx context.Context, sb store.Sandbox) (envdTarget, error) {
	if s.local(sb) {
		// The agent is in this process: envd is reached at the sandbox's
		// own address, without the agent's proxy.
		inst, err := s.cfg.Local.SandboxAddr(sb.ID)
		if errors.Is(err, errdefs.ErrNotFound) {
			// The store has it and the agent does not: lost, not unknown.
			err = fmt.Errorf("%v: %w", err, errdefs.ErrUnreachable)
		}
		if err != nil {
			return envdTarget{}, fmt.Errorf("envd of sandbox %s: %w", sb.ID, err)
		}
		hdr := http.Header{}
		if sb.EnvdAccessToken != "" {
			hdr.Set(wire.HeaderAccessToken, sb.EnvdAccessToken)
		}
		base := "http://" + proxy.SandboxHost(inst.Key, netip.AddrPortFrom(inst.Addr, wire.EnvdPort))
		return envdTarget{sandboxID: sb.ID, base: base, header: hdr}, nil
	}
	h, err := s.hostOf(ctx, sb)
	if err != nil {
		return envdTarget{}, err
	}
	if h.State == store.HostDown {
		return envdTarget{}, fmt.Errorf("host %s of sandbox %s is down: %w", h.ID, sb.ID, errdefs.ErrUnreachable)
	}
	base, err := url.JoinPath(h.URL, "proxy", sb.ID, fmt.Sprint(wire.EnvdPort))
	if err != nil {
		return envdTarget{}, fmt.Errorf("envd url of sandbox %s on host %s: %v: %w", sb.ID, h.ID, err, errdefs.ErrUnreachable)
	}
	hdr := http.Header{}
	if tok := s.agents.token(h.ID); tok != "" {
		hdr.Set(wire.HeaderAgentToken, tok)
	}
	if sb.EnvdAccessToken != "" {
		hdr.Set(wire.HeaderAccessToken, sb.EnvdAccessToken)
	}
	return envdTarget{sandboxID: sb.ID, base: base, header: hdr}, nil
}

// request builds a request to envd's path (e.g. "/files") with query q.
func (t envdTarget) request(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Request, error) {
	u := t.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("envd request %s %s: %v: %w", method, path, err, errdefs.ErrUnreachable)
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	return req, nil
}

// basicUser is envd's user selector: "Authorization: Basic base64(user:)".
func basicUser(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"))
}

// running refuses sandboxes whose envd cannot be reached, the way the
// proxy does: paused or starting → ErrConflict (409), lost or failed →
// ErrUnreachable (502).
func running(sb store.Sandbox) error {
	switch sb.State {
	case store.SandboxRunning:
		return nil
	case store.SandboxLost, store.SandboxError:
		return fmt.Errorf("sandbox %s is %s: %w", sb.ID, sb.State, errdefs.ErrUnreachable)
	}
	return fmt.Errorf("sandbox %s is %s: %w", sb.ID, sb.State, errdefs.ErrConflict)
}

// runningSandbox loads the path's sandbox of the caller's team and its
// envd, or fails.
func (s *Server) runningSandbox(r *http.Request, key store.APIKey) (store.Sandbox, envdTarget, error) {
	sb, err := s.teamSandbox(r, key)
	if err == nil {
		err = running(sb)
	}
	if err != nil {
		return store.Sandbox{}, envdTarget{}, err
	}
	t, err := s.envdOf(r.Context(), sb)
	return sb, t, err
}

// localEnvd sends requests for the in-process agent's sandboxes
// (http://{run}.sandbox:{port}, see envdOf) straight to the sandbox, on
// connections pooled by the sandbox's run (proxy.ToSandbox), and every
// other request (to agents) on as it is. A request for a run that has
// ended (the sandbox was booted afresh, restored or destroyed since its
// URL was made) fails as unreachable rather than reach another.
type localEnvd struct {
	next   http.RoundTripper
	lookup func(sandboxID string) (proxy.Instance, error)
}

func (l localEnvd) RoundTrip(r *http.Request) (*http.Response, error) {
	key, ok := strings.CutSuffix(r.URL.Hostname(), ".sandbox")
	if !ok {
		return l.next.RoundTrip(r)
	}
	id := key[:max(strings.LastIndexByte(key, '.'), 0)]
	port, _ := strconv.Atoi(r.URL.Port())
	inst, err := l.lookup(id)
	if err == nil && inst.Key != key {
		err = fmt.Errorf("sandbox %s was restarted since: %w", id, errdefs.ErrUnreachable)
	}
	if err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	ctx := proxy.ToSandbox(r.Context(), key, netip.AddrPortFrom(inst.Addr, uint16(port)))
	return l.next.RoundTrip(r.WithContext(ctx))
}
