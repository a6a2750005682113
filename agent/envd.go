package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/wire"
)

// envdPoll is how often a new sandbox's envd is asked whether it is up.
const envdPoll = 5 * time.Millisecond

// envdClient talks to the envd of sandboxes on this host: readiness and
// /init. It has its own transport so proxy traffic cannot delay a create.
type envdClient struct {
	transport *http.Transport
	http      *http.Client
}

func newEnvdClient() *envdClient {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     10 * time.Second,
	}
	return &envdClient{transport: t, http: &http.Client{Transport: t, Timeout: 10 * time.Second}}
}

func (c *envdClient) close() { c.transport.CloseIdleConnections() }

// healthy asks envd once whether it is up.
func (c *envdClient) healthy(ctx context.Context, addr netip.AddrPort) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr.String()+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusNoContent
}

// waitHealthy polls envd's /health until it answers 204, ctx ends or
// timeout passes.
func (c *envdClient) waitHealthy(ctx context.Context, addr netip.AddrPort, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(envdPoll)
	defer tick.Stop()
	for {
		if c.healthy(wctx, addr) {
			return nil
		}
		select {
		case <-wctx.Done():
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("wait for envd: %w", err)
			}
			return fmt.Errorf("envd at %s not healthy within %s: %w", addr, timeout, errdefs.ErrUnavailable)
		case <-tick.C:
		}
	}
}

// envdInit is the body of envd's POST /init.
type envdInit struct {
	EnvVars        map[string]string `json:"envVars,omitempty"`
	AccessToken    *string           `json:"accessToken,omitempty"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
	Timestamp      time.Time         `json:"timestamp"`
	// Hostname and Entropy are roost's, for a VM forked from a capture
	// (see forkIdentity); envd takes them only as a VM guest's.
	Hostname string `json:"hostname,omitempty"`
	Entropy  []byte `json:"entropy,omitempty"`
}

// init sends /init; envd answers 204. token is the access token envd
// already requires, if any (a restored sandbox's envd has one).
func (c *envdClient) init(ctx context.Context, addr netip.AddrPort, token string, body envdInit) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("envd init: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr.String()+"/init", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("envd init: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set(wire.HeaderAccessToken, token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("envd init: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("envd init: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// envdVersion asks the envd binary for its version; empty when it cannot
// tell.
func envdVersion(ctx context.Context, path string) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "-version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
