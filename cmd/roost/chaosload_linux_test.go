package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// chaosClient calls the API of whichever replica it picks, as clients
// behind a load balancer would; a failed call is retried on another
// replica a second later, then after 2 and 4 s more (a PostgreSQL
// restart fails every replica for a moment).
type chaosClient struct {
	key  string
	http *http.Client

	mu   sync.Mutex // guards the fields below
	apis []string   // the replicas' base URLs
	// calls are the calls made since the last take.
	calls []chaosCall
	// seen is every sandbox the test made or saw an agent run, whose
	// leftovers it looks for at the end.
	seen map[string]bool
}

// chaosCall is one API call of the load, with its retry.
type chaosCall struct {
	op      string
	took    time.Duration // first try
	failed  bool          // the first try failed
	retried error         // the retry's error, if it failed too
}

func newChaosClient(key string, apis []string) *chaosClient {
	return &chaosClient{key: key, apis: apis, http: &http.Client{Timeout: 30 * time.Second}}
}

func (c *chaosClient) pick() string { return c.pickOther("") }

// pickOther picks a replica other than not.
func (c *chaosClient) pickOther(not string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if api := c.apis[rand.IntN(len(c.apis))]; api != not || len(c.apis) == 1 {
			return api
		}
	}
}

// saw records sandboxes the test made or saw run.
func (c *chaosClient) saw(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen = make(map[string]bool)
	}
	for _, id := range ids {
		c.seen[id] = true
	}
}

// seenIDs is every sandbox saw recorded.
func (c *chaosClient) seenIDs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.seen))
}

// take returns the calls made since the last take.
func (c *chaosClient) take() []chaosCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls := c.calls
	c.calls = nil
	return calls
}

// call makes one call on a replica and, if it fails, once more on
// another; it returns the last error.
func (c *chaosClient) call(ctx context.Context, op, method, path, body string, want int, out any) error {
	return c.retry(ctx, op, method+" "+path, func(api string) error { return c.once(ctx, api, method, path, body, want, out) })
}

// retry runs try on a replica and, while it fails, on another after 1,
// 2 and 4 s; it records the call and returns the last error.
func (c *chaosClient) retry(ctx context.Context, op, what string, try func(api string) error) error {
	rec := chaosCall{op: op}
	begin := time.Now()
	api := c.pick()
	err := try(api)
	rec.took = time.Since(begin)
	rec.failed = err != nil
	for wait := time.Second; err != nil && ctx.Err() == nil && wait <= 4*time.Second; wait *= 2 {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		api = c.pickOther(api)
		err = try(api)
	}
	if err != nil && ctx.Err() == nil {
		rec.retried = fmt.Errorf("%s: %w", what, err)
	}
	if ctx.Err() == nil {
		c.mu.Lock()
		c.calls = append(c.calls, rec)
		c.mu.Unlock()
	}
	return err
}

// terminal opens a terminal in sandbox id through api, has it echo a
// line and reads the line back, then closes it normally.
func (c *chaosClient) terminal(ctx context.Context, api, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h := http.Header{}
	h.Set("X-API-Key", c.key)
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(api, "http")+"/v1/sandboxes/"+id+"/pty", &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageBinary, append([]byte{0}, "echo pty-$((6*7))\n"...)); err != nil {
		return err
	}
	var out strings.Builder
	for !strings.Contains(out.String(), "pty-42") {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("terminal output %q: %w", out.String(), err)
		}
		if typ == websocket.MessageBinary && len(b) > 0 {
			out.Write(b[1:])
		}
	}
	return ws.Close(websocket.StatusNormalClosure, "")
}

func (c *chaosClient) once(ctx context.Context, api, method, path, body string, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, api+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-API-Key", c.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// chaosSandbox is a created sandbox as the API describes it.
type chaosSandbox struct {
	ID       string `json:"sandboxID"`
	ClientID string `json:"clientID"`
	State    string `json:"state"`
}

// exec runs the shell command cmd in sandbox id and returns its stdout.
func (c *chaosClient) exec(ctx context.Context, id, cmd string) (string, error) {
	var out struct {
		Stdout   string `json:"stdout"`
		ExitCode int    `json:"exitCode"`
	}
	body, _ := json.Marshal(map[string]any{"cmd": cmd})
	if err := c.call(ctx, "exec", "POST", "/v1/sandboxes/"+id+"/exec", string(body), http.StatusOK, &out); err != nil {
		return "", err
	}
	if out.ExitCode != 0 {
		return out.Stdout, fmt.Errorf("exec %q in %s: exit %d", cmd, id, out.ExitCode)
	}
	return out.Stdout, nil
}

// load runs one worker's loop until ctx ends: create a sandbox, exec in
// it, write and read back a file, reach envd through the proxy, stream a
// terminal, kill it.
// The create and the kill outlive ctx: a create given up on halfway
// would still make its sandbox (the control plane finishes it), which
// no one would then kill.
func (c *chaosClient) load(ctx context.Context) {
	for ctx.Err() == nil {
		var sb chaosSandbox
		if err := c.call(context.WithoutCancel(ctx), "create", "POST", "/v2/sandboxes", `{"templateID":"base","timeout":120}`, http.StatusCreated, &sb); err != nil {
			continue
		}
		c.saw(sb.ID)
		_, _ = c.exec(ctx, sb.ID, "echo load")
		_ = c.call(ctx, "write", "PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/load.txt", "load", http.StatusOK, nil)
		_ = c.call(ctx, "read", "GET", "/v1/sandboxes/"+sb.ID+"/files?path=/tmp/load.txt", "", http.StatusOK, nil)
		_ = c.call(ctx, "proxy", "GET", "/proxy/"+sb.ID+"/49983/health", "", http.StatusNoContent, nil)
		_ = c.retry(ctx, "pty", "terminal of "+sb.ID, func(api string) error { return c.terminal(ctx, api, sb.ID) })
		_ = c.call(context.WithoutCancel(ctx), "kill", "DELETE", "/sandboxes/"+sb.ID, "", http.StatusNoContent, nil)
	}
}

// summary is what calls tell of a fault: calls whose first try failed,
// calls that failed on retry too, and the first tries' p99.
func summary(calls []chaosCall) (failed int, retryFailed []error, p99 time.Duration) {
	var took []time.Duration
	for _, c := range calls {
		took = append(took, c.took)
		if c.failed {
			failed++
		}
		if c.retried != nil {
			retryFailed = append(retryFailed, fmt.Errorf("%s: %w", c.op, c.retried))
		}
	}
	if len(took) > 0 {
		slices.Sort(took)
		p99 = took[len(took)*99/100]
	}
	return failed, retryFailed, p99
}
