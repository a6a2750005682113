package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"roost.dev/roost/wire"
)

// Client talks to one roost control plane.
type Client struct {
	baseURL string
	apiKey  string
	// adminToken, when set, authenticates instead of apiKey, acting for
	// team when that is set too.
	adminToken, team string
	http             *http.Client
}

// New returns a client for the control plane at baseURL (e.g.
// http://127.0.0.1:3000) authenticating with apiKey.
func New(baseURL, apiKey string) *Client {
	return &Client{baseURL: strings.TrimRight(baseURL, "/"), apiKey: apiKey, http: &http.Client{}}
}

// NewOperator returns a client that authenticates with the operator's
// token: it may call the operator's methods (teams, their keys, the whole
// audit log), and, through ForTeam, act as any team.
func NewOperator(baseURL, adminToken string) *Client {
	return &Client{baseURL: strings.TrimRight(baseURL, "/"), adminToken: adminToken, http: &http.Client{}}
}

// ForTeam returns a copy of an operator's client that acts as the team
// on the team methods (X-Team-ID).
func (c *Client) ForTeam(teamID string) *Client {
	cc := *c
	cc.team = teamID
	return &cc
}

// Sandbox is a sandbox as the API describes it.
type Sandbox struct {
	ID              string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	Alias           string            `json:"alias,omitempty"`
	ClientID        string            `json:"clientID"`
	State           string            `json:"state,omitempty"`
	CPUCount        int               `json:"cpuCount,omitempty"`
	MemoryMB        int               `json:"memoryMB,omitempty"`
	DiskSizeMB      int               `json:"diskSizeMB,omitempty"`
	StartedAt       time.Time         `json:"startedAt"`
	EndAt           time.Time         `json:"endAt"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          string            `json:"domain,omitempty"`
	Metadata        map[string]string `json:"metadata,omitempty"`
	// Runtime, Capabilities, Hibernated, Paused and DiskBytes are roost's
	// additions, filled by Describe and Hibernate (roost's /v1 API) only.
	Runtime      string        `json:"runtime,omitempty"`
	Capabilities *Capabilities `json:"capabilities,omitempty"`
	// Hibernated: paused with its memory on disk (Snapshot); nil when
	// unknown.
	Hibernated *bool `json:"hibernated,omitempty"`
	// Paused says how a paused sandbox is kept: "frozen", "hibernated"
	// or "filesystem" (resume boots it afresh).
	Paused string `json:"paused,omitempty"`
	// DiskBytes is the disk the sandbox holds on its host; nil when
	// unknown.
	DiskBytes *int64 `json:"diskBytes,omitempty"`
}

// Capabilities are what the runtime behind a sandbox can do.
type Capabilities struct {
	Pause    bool `json:"pause"`
	Snapshot bool `json:"snapshot"`
	Fork     bool `json:"fork"`
	VM       bool `json:"vm"`
}

// Error is an error answer of the API.
type Error struct {
	Status  int    `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }

// CreateOptions describe a new sandbox. Zero values take the server's
// defaults.
type CreateOptions struct {
	Template      string
	Timeout       time.Duration
	Metadata      map[string]string
	Env           map[string]string
	AllowInternet *bool
	AutoPause     bool
	// Volumes are the team's volumes the sandbox mounts.
	Volumes []VolumeMount
}

// Create starts a sandbox and returns it once it is ready.
func (c *Client) Create(ctx context.Context, o CreateOptions) (Sandbox, error) {
	body := map[string]any{"templateID": o.Template, "metadata": o.Metadata, "envVars": o.Env, "autoPause": o.AutoPause}
	if o.Template == "" {
		body["templateID"] = "base"
	}
	if o.Timeout > 0 {
		body["timeout"] = int(o.Timeout.Round(time.Second) / time.Second)
	}
	if o.AllowInternet != nil {
		body["allow_internet_access"] = *o.AllowInternet
	}
	if len(o.Volumes) > 0 {
		body["volumeMounts"] = o.Volumes
	}
	var sb Sandbox
	_, err := c.do(ctx, http.MethodPost, "/v2/sandboxes", body, &sb)
	return sb, err
}

// ListOptions filter List.
type ListOptions struct {
	States   []string // "running", "paused"; empty means both
	Metadata map[string]string
}

// List returns every sandbox that matches, following pagination.
func (c *Client) List(ctx context.Context, o ListOptions) ([]Sandbox, error) {
	q := url.Values{}
	if len(o.States) > 0 {
		q.Set("state", strings.Join(o.States, ","))
	}
	if len(o.Metadata) > 0 {
		md := url.Values{}
		for k, v := range o.Metadata {
			md.Set(k, v)
		}
		q.Set("metadata", md.Encode())
	}
	var all []Sandbox
	for {
		var page []Sandbox
		h, err := c.do(ctx, http.MethodGet, "/v2/sandboxes?"+q.Encode(), nil, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next := h.Get("X-Next-Token")
		if next == "" || len(page) == 0 {
			return all, nil
		}
		q.Set("nextToken", next)
	}
}

// Get returns one sandbox, with its envd access token.
func (c *Client) Get(ctx context.Context, id string) (Sandbox, error) {
	var sb Sandbox
	_, err := c.do(ctx, http.MethodGet, "/sandboxes/"+url.PathEscape(id), nil, &sb)
	return sb, err
}

// Describe returns one sandbox as Get does, plus the runtime behind it,
// that runtime's capabilities and whether the sandbox is hibernated.
func (c *Client) Describe(ctx context.Context, id string) (Sandbox, error) {
	var sb Sandbox
	_, err := c.do(ctx, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(id), nil, &sb)
	return sb, err
}

// Hibernate hibernates a running or paused sandbox: its memory goes to
// disk and its process ends; Resume restores it. A runtime that cannot
// hibernate is an *Error with Status 409 that says so. It may take
// minutes under software emulation.
func (c *Client) Hibernate(ctx context.Context, id string) (Sandbox, error) {
	var sb Sandbox
	_, err := c.do(ctx, http.MethodPost, "/v1/sandboxes/"+url.PathEscape(id)+"/snapshot", nil, &sb)
	return sb, err
}

// ForkResult is one fork's outcome: its sandbox, or why it did not start.
type ForkResult struct {
	Sandbox *Sandbox `json:"sandbox,omitempty"`
	Error   *Error   `json:"error,omitempty"`
}

// Fork makes count new sandboxes from a running sandbox's current state,
// each living timeout (0: the server's default, 15 s): its memory and
// processes are carried (VM runtimes; another runtime is an *Error with
// Status 501). Each fork succeeds or fails on its own.
func (c *Client) Fork(ctx context.Context, id string, count int, timeout time.Duration) ([]ForkResult, error) {
	body := map[string]int{"count": count}
	if timeout > 0 {
		body["timeout"] = int(timeout.Round(time.Second) / time.Second)
	}
	var out []ForkResult
	_, err := c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/fork", body, &out)
	return out, err
}

// Kill destroys a sandbox.
func (c *Client) Kill(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/sandboxes/"+url.PathEscape(id), nil, nil)
	return err
}

// SetTimeout sets how long from now the sandbox lives.
func (c *Client) SetTimeout(ctx context.Context, id string, d time.Duration) error {
	_, err := c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/timeout", map[string]int{"timeout": int(d / time.Second)}, nil)
	return err
}

// Pause pauses a sandbox; Resume brings it back. With keepMemory its
// processes are kept (frozen, or hibernated to disk where the runtime
// can); without, they end and only its filesystem is kept: Resume boots
// it afresh (E2B's keepMemory: false).
func (c *Client) Pause(ctx context.Context, id string, keepMemory bool) error {
	var body any
	if !keepMemory {
		body = map[string]bool{"memory": false}
	}
	_, err := c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(id)+"/pause", body, nil)
	return err
}

// Resume resumes a paused sandbox (a running one just gets the timeout) and
// returns it.
func (c *Client) Resume(ctx context.Context, id string, timeout time.Duration) (Sandbox, error) {
	body := map[string]int{}
	if timeout > 0 {
		body["timeout"] = int(timeout / time.Second)
	}
	var sb Sandbox
	_, err := c.do(ctx, http.MethodPost, "/v2/sandboxes/"+url.PathEscape(id)+"/connect", body, &sb)
	return sb, err
}

// do sends one API request; out, when non-nil, receives the JSON answer.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.baseURL+path, body)
	if err != nil {
		return nil, err
	}
	c.authenticate(req)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, readError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// authenticate sets the request's credential headers.
func (c *Client) authenticate(req *http.Request) {
	if c.adminToken == "" {
		req.Header.Set(wire.HeaderAPIKey, c.apiKey)
		return
	}
	req.Header.Set(wire.HeaderAdminToken, c.adminToken)
	if c.team != "" {
		req.Header.Set(wire.HeaderTeamID, c.team)
	}
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(b, e) != nil || e.Message == "" {
		e.Message = strings.TrimSpace(string(b))
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
	}
	e.Status = resp.StatusCode
	return e
}
