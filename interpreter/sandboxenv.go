package interpreter

import (
	"context"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"sync"
	"time"
)

// The sandbox's env vars, given at its create, reach its kernels through
// envd (Config.SandboxEnv): a kernel started after the create has them
// in its environment, and one started before it (the default kernel of a
// sandbox forked from a template's capture, taken before any create) has
// them set as it next runs code.

// sandboxEnvClient reads envd's /envs; it answers from the sandbox's own
// loopback, at once or not at all.
var sandboxEnvClient = &http.Client{Timeout: 2 * time.Second}

// envFresh is how long an answer of envd's is used before it is asked
// again: its env vars change only as a sandbox is created or resumed. A
// sandbox restored from a capture is another one: its hostname (its ID)
// is not the captured sandbox's, and that alone has envd asked again.
const envFresh = time.Second

// envCache is envd's last answer (nil when it gave none), by URL and
// hostname.
type envCache struct {
	mu       sync.Mutex
	url      string
	hostname string
	at       time.Time // zero before the first answer
	env      map[string]string
}

var lastEnv envCache

// sandboxEnv is the sandbox's env vars as envd has them (as of at most
// envFresh ago), or nil when there is no envd to ask (url "") or it did
// not answer.
func sandboxEnv(ctx context.Context, url string) map[string]string {
	if url == "" {
		return nil
	}
	hostname, _ := os.Hostname()
	lastEnv.mu.Lock()
	defer lastEnv.mu.Unlock()
	if lastEnv.url == url && lastEnv.hostname == hostname && !lastEnv.at.IsZero() && time.Since(lastEnv.at) < envFresh {
		return lastEnv.env
	}
	env := askEnvd(ctx, url)
	lastEnv.url, lastEnv.hostname, lastEnv.at, lastEnv.env = url, hostname, time.Now(), env
	return env
}

// askEnvd is envd's answer at url, or nil.
func askEnvd(ctx context.Context, url string) map[string]string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil
	}
	resp, err := sandboxEnvClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var env map[string]string
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&env) != nil {
		return nil
	}
	return env
}

// withEnv is base with env's variables added, env's winning.
func withEnv(base []string, env map[string]string) []string {
	out := append([]string(nil), base...)
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// syncEnv sets in c's kernel k the sandbox's env vars it does not have
// yet, for good. A language that cannot set them (Java) keeps what it
// started with.
func (c *codeContext) syncEnv(ctx context.Context, k kernel) error {
	env := sandboxEnv(ctx, c.cfg.SandboxEnv)
	if env == nil {
		return nil
	}
	c.mu.Lock()
	changed := map[string]string{}
	for key, v := range env {
		if have, ok := c.env[key]; !ok || have != v {
			changed[key] = v
		}
	}
	c.mu.Unlock()
	if len(changed) == 0 {
		return nil
	}
	set, _, err := c.lang.envSet(changed)
	if err != nil {
		return nil
	}
	if err := run(ctx, k, set, true, nil); err != nil {
		return err
	}
	c.mu.Lock()
	if c.env == nil {
		c.env = map[string]string{}
	}
	maps.Copy(c.env, changed)
	c.mu.Unlock()
	return nil
}
