package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Host is a host agent as the control plane lists it.
type Host struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	URL      string `json:"url"`
	State    string `json:"state"` // ready, down
	Runtime  string `json:"runtime"`
	Capacity struct {
		CPUs         int   `json:"cpus"`
		MemoryMB     int64 `json:"memoryMB"`
		MaxSandboxes int   `json:"maxSandboxes"`
	} `json:"capacity"`
	RegisteredAt  time.Time  `json:"registeredAt"`
	LastHeartbeat *time.Time `json:"lastHeartbeat"`
	// Sandboxes holds a slot on the host: starting, running or paused.
	Sandboxes int `json:"sandboxes"`
	// Running are those starting or running: what a drain waits for.
	Running  int  `json:"running"`
	Cordoned bool `json:"cordoned"`
}

// Drain is what a drain did: the host, cordoned, and its sandboxes
// paused, or not and why; then its paused sandboxes moved to another
// host, or kept and why.
type Drain struct {
	Host   Host              `json:"host"`
	Paused []string          `json:"paused"`
	Failed map[string]string `json:"failed"`
	Moved  map[string]string `json:"moved"` // sandbox → its new host
	Kept   map[string]string `json:"kept"`  // sandbox → why it stays
}

// Hosts lists the hosts.
func (c *Client) Hosts(ctx context.Context) ([]Host, error) {
	var out []Host
	_, err := c.do(ctx, http.MethodGet, "/v1/hosts", nil, &out)
	return out, err
}

// CordonHost marks a host cordoned (no new sandboxes) or takes the mark
// off (the operator's).
func (c *Client) CordonHost(ctx context.Context, id string, cordoned bool) (Host, error) {
	op := "/cordon"
	if !cordoned {
		op = "/uncordon"
	}
	var h Host
	_, err := c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(id)+op, nil, &h)
	return h, err
}

// DrainHost cordons a host, pauses its running sandboxes and moves the
// hibernated ones to other hosts (the
// operator's).
func (c *Client) DrainHost(ctx context.Context, id string) (Drain, error) {
	var d Drain
	_, err := c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(id)+"/drain", nil, &d)
	return d, err
}

// RemoveHost removes a cordoned host that holds no sandbox (the
// operator's).
func (c *Client) RemoveHost(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/hosts/"+url.PathEscape(id), nil, nil)
	return err
}
