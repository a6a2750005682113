package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Quota is a team's quota: the limits enforced, those set for the team
// itself, and what its sandboxes hold.
type Quota struct {
	Limits          map[string]int64 `json:"limits"`
	Own             map[string]int64 `json:"own"`
	Usage           map[string]int64 `json:"usage"`
	PausedDiskBytes *int64           `json:"pausedDiskBytes"`
}

// Team is a team as the operator sees it.
type Team struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	Quota     *Quota    `json:"quota,omitempty"`
	// APIKey is the team's first key, set by CreateTeam only.
	APIKey *APIKey `json:"apiKey,omitempty"`
}

// APIKey is an API key; Key, its plaintext, is set only when it was just
// made.
type APIKey struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Key       string    `json:"key,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	Mask      struct {
		Prefix string `json:"prefix"`
		Suffix string `json:"maskedValueSuffix"`
	} `json:"mask"`
}

// Teams lists every team (the operator's).
func (c *Client) Teams(ctx context.Context) ([]Team, error) {
	var out []Team
	_, err := c.do(ctx, http.MethodGet, "/v1/teams", nil, &out)
	return out, err
}

// CreateTeam makes a team with its own limits (nil: the defaults) and a
// first API key (the operator's).
func (c *Client) CreateTeam(ctx context.Context, name string, quota map[string]int64) (Team, error) {
	var t Team
	_, err := c.do(ctx, http.MethodPost, "/v1/teams", map[string]any{"name": name, "quota": quota}, &t)
	return t, err
}

// DeleteTeam deletes a team; force kills its sandboxes first (the
// operator's).
func (c *Client) DeleteTeam(ctx context.Context, id string, force bool) error {
	path := "/v1/teams/" + url.PathEscape(id)
	if force {
		path += "?force=true"
	}
	_, err := c.do(ctx, http.MethodDelete, path, nil, nil)
	return err
}

// TeamQuota reads a team's quota (the operator's).
func (c *Client) TeamQuota(ctx context.Context, id string) (Quota, error) {
	var q Quota
	_, err := c.do(ctx, http.MethodGet, "/v1/teams/"+url.PathEscape(id)+"/quota", nil, &q)
	return q, err
}

// SetTeamQuota sets the team's own limits given a value and drops those
// given nil (the operator's).
func (c *Client) SetTeamQuota(ctx context.Context, id string, changes map[string]*int64) (Quota, error) {
	var q Quota
	_, err := c.do(ctx, http.MethodPatch, "/v1/teams/"+url.PathEscape(id)+"/quota", changes, &q)
	return q, err
}

// CreateAPIKey makes an API key of the client's team, or, with an
// operator's client and a team ID, of that team.
func (c *Client) CreateAPIKey(ctx context.Context, teamID, name string) (APIKey, error) {
	path := "/api-keys"
	if teamID != "" {
		path = "/admin/teams/" + url.PathEscape(teamID) + "/api-keys"
	}
	var k APIKey
	_, err := c.do(ctx, http.MethodPost, path, map[string]string{"name": name}, &k)
	return k, err
}

// APIKeys lists the client's team's API keys.
func (c *Client) APIKeys(ctx context.Context) ([]APIKey, error) {
	var out []APIKey
	_, err := c.do(ctx, http.MethodGet, "/api-keys", nil, &out)
	return out, err
}

// DeleteAPIKey deletes an API key of the client's team, or, with an
// operator's client and a team ID, of that team.
func (c *Client) DeleteAPIKey(ctx context.Context, teamID, id string) error {
	path := "/api-keys/" + url.PathEscape(id)
	if teamID != "" {
		path = "/admin/teams/" + url.PathEscape(teamID) + "/api-keys/" + url.PathEscape(id)
	}
	_, err := c.do(ctx, http.MethodDelete, path, nil, nil)
	return err
}

// AuditEntry is one entry of the audit log.
type AuditEntry struct {
	ID     string    `json:"id"`
	At     time.Time `json:"at"`
	TeamID string    `json:"teamID"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Source string    `json:"source"`
	Status int       `json:"status"`
	Error  string    `json:"error,omitempty"`
}

// AuditQuery selects audit entries; zero fields select all.
type AuditQuery struct {
	Team   string // the operator's: one team's entries
	Action string
	Since  time.Time
	Until  time.Time
	Limit  int
	Cursor string
}

// Audit reads one page of the audit log, oldest first, and the cursor
// of the next ("" on the last).
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]AuditEntry, string, error) {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("team", q.Team)
	set("action", q.Action)
	set("cursor", q.Cursor)
	if !q.Since.IsZero() {
		v.Set("since", q.Since.Format(time.RFC3339Nano))
	}
	if !q.Until.IsZero() {
		v.Set("until", q.Until.Format(time.RFC3339Nano))
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var page struct {
		Entries    []AuditEntry `json:"entries"`
		NextCursor string       `json:"nextCursor"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/audit?"+v.Encode(), nil, &page)
	return page.Entries, page.NextCursor, err
}

// Event is a sandbox lifecycle event (E2B's, version v2).
type Event struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	SandboxID string          `json:"sandboxId"`
	TeamID    string          `json:"sandboxTeamId"`
	Template  string          `json:"sandboxTemplateId"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"eventData"`
}

// Events lists the team's latest events, or one sandbox's (sandboxID),
// newest first, at most limit (1 to 100).
func (c *Client) Events(ctx context.Context, sandboxID string, limit int, types ...string) ([]Event, error) {
	path := "/events/sandboxes"
	if sandboxID != "" {
		path += "/" + url.PathEscape(sandboxID)
	}
	v := url.Values{"limit": {strconv.Itoa(limit)}}
	for _, t := range types {
		v.Add("types", t)
	}
	var out []Event
	_, err := c.do(ctx, http.MethodGet, path+"?"+v.Encode(), nil, &out)
	return out, err
}

// StreamEvents calls fn with each of the team's events as it happens,
// until ctx ends or fn fails. On a broken stream it reconnects from the
// last event it had.
func (c *Client) StreamEvents(ctx context.Context, sandboxID string, types []string, fn func(Event) error) error {
	v := url.Values{}
	if sandboxID != "" {
		v.Set("sandbox", sandboxID)
	}
	for _, t := range types {
		v.Add("types", t)
	}
	last := ""
	for {
		err := c.streamOnce(ctx, "/v1/events?"+v.Encode(), &last, fn)
		if ctx.Err() != nil {
			return nil
		}
		var apiErr *Error
		var stop callbackError
		switch {
		case errors.As(err, &stop):
			return stop.err
		case errors.As(err, &apiErr) && apiErr.Status < 500:
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func (c *Client) streamOnce(ctx context.Context, path string, last *string, fn func(Event) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.baseURL+path, nil)
	if err != nil {
		return err
	}
	c.authenticate(req)
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var id string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			var ev Event
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev); err != nil {
				return fmt.Errorf("event stream: %w", err)
			}
			*last = id
			if err := fn(ev); err != nil {
				return callbackError{err}
			}
		}
	}
	return sc.Err()
}

// callbackError is StreamEvents's callback's error: it ends the stream.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// Webhook is a team's webhook.
type Webhook struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"teamId"`
	Name      string    `json:"name"`
	URL       string    `json:"url"`
	Enabled   bool      `json:"enabled"`
	Events    []string  `json:"events"`
	CreatedAt time.Time `json:"createdAt"`
}

// CreateWebhook registers a webhook of the team for the event types.
func (c *Client) CreateWebhook(ctx context.Context, name, target, secret string, events []string) (Webhook, error) {
	var w Webhook
	_, err := c.do(ctx, http.MethodPost, "/events/webhooks", map[string]any{
		"name": name, "url": target, "signatureSecret": secret, "events": events, "enabled": true}, &w)
	return w, err
}

// Webhooks lists the team's webhooks.
func (c *Client) Webhooks(ctx context.Context) ([]Webhook, error) {
	var out []Webhook
	_, err := c.do(ctx, http.MethodGet, "/events/webhooks", nil, &out)
	return out, err
}

// DeleteWebhook deletes a webhook of the team.
func (c *Client) DeleteWebhook(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/events/webhooks/"+url.PathEscape(id), nil, nil)
	return err
}

// Delivery is one event's delivery to a webhook.
type Delivery struct {
	ID         string     `json:"id"`
	EventID    string     `json:"eventId"`
	EventType  string     `json:"eventType"`
	EventAt    time.Time  `json:"eventTimestamp"`
	State      string     `json:"state"`
	Attempts   int        `json:"attempts"`
	LastStatus int        `json:"lastStatus"`
	LastError  string     `json:"lastError"`
	NextAt     *time.Time `json:"nextAttemptAt"`
	DoneAt     *time.Time `json:"doneAt"`
}

// Deliveries reads a webhook's delivery log, newest first.
func (c *Client) Deliveries(ctx context.Context, webhookID string) ([]Delivery, error) {
	var out []Delivery
	_, err := c.do(ctx, http.MethodGet, "/events/webhooks/"+url.PathEscape(webhookID)+"/deliveries", nil, &out)
	return out, err
}

// MetricPoint is one point of a sandbox's metrics history: E2B's fields,
// the interval it stands for, and the network's bytes in it.
type MetricPoint struct {
	Timestamp    time.Time `json:"timestamp"`
	CPUCount     int       `json:"cpuCount"`
	CPUUsedPct   float64   `json:"cpuUsedPct"`
	MemUsed      uint64    `json:"memUsed"`
	MemTotal     uint64    `json:"memTotal"`
	MemCache     uint64    `json:"memCache"`
	DiskUsed     uint64    `json:"diskUsed"`
	DiskTotal    uint64    `json:"diskTotal"`
	ResolutionMs int64     `json:"resolutionMs"`
	Samples      int       `json:"samples"`
	NetRxBytes   uint64    `json:"netRxBytes"`
	NetTxBytes   uint64    `json:"netTxBytes"`
}

// Metrics reads a sandbox's metrics history from start to end (zero: the
// server's defaults), in steps of step (zero: as kept).
func (c *Client) Metrics(ctx context.Context, id string, start, end time.Time, step time.Duration) ([]MetricPoint, error) {
	v := url.Values{}
	if !start.IsZero() {
		v.Set("start", strconv.FormatInt(start.Unix(), 10))
	}
	if !end.IsZero() {
		v.Set("end", strconv.FormatInt(end.Unix(), 10))
	}
	if step > 0 {
		v.Set("step", strconv.FormatInt(int64(step/time.Second), 10))
	}
	var out struct {
		Points []MetricPoint `json:"points"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/sandboxes/"+url.PathEscape(id)+"/metrics?"+v.Encode(), nil, &out)
	return out.Points, err
}
