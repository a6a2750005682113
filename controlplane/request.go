package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// Request limits.
const (
	maxBodyBytes   = 1 << 20
	defaultTimeout = 300 * time.Second
	// maxTimeout is the agent's limit too.
	maxTimeout = 24 * time.Hour
	// maxVCPUs and maxMemoryMB only reject absurd values early; the agent
	// checks requests against the host it runs on.
	maxVCPUs       = 1024
	maxMemoryMB    = 1 << 24
	defaultTmpl    = "base"
	maxMetadataLen = 64 << 10
)

// createRequest is POST /v2/sandboxes's body (E2B's NewSandbox) with
// roost's optional resource fields. Pointers tell "absent" from zero.
type createRequest struct {
	TemplateID          string            `json:"templateID"`
	Timeout             *int64            `json:"timeout"`
	Metadata            map[string]string `json:"metadata"`
	EnvVars             map[string]string `json:"envVars"`
	AutoPause           bool              `json:"autoPause"`
	AutoResume          *autoResumeConfig `json:"autoResume"`
	Secure              *bool             `json:"secure"`
	AllowInternetAccess *bool             `json:"allow_internet_access"`
	Network             *networkRequest   `json:"network"`
	// E2B settings roost cannot honour yet: a create that sets one is
	// refused (unsupportedSetting), never run without it.
	AutoPauseMemory *bool           `json:"autoPauseMemory"`
	MCP             json.RawMessage `json:"mcp"`
	IAM             json.RawMessage `json:"iam"`
	// VolumeMounts are E2B's, with roost's readOnly (volumes.go).
	VolumeMounts []volumeMountRequest `json:"volumeMounts"`
	// Roost extensions; zero means the agent's default.
	CPUCount int64 `json:"cpuCount"`
	MemoryMB int64 `json:"memoryMB"`
	DiskMB   int64 `json:"diskSizeMB"`
}

// networkRequest is E2B's SandboxNetworkConfig. Only allowPublicTraffic
// is honoured; the egress settings are refused until roost enforces them.
type networkRequest struct {
	AllowPublicTraffic *bool                      `json:"allowPublicTraffic"`
	AllowOut           []string                   `json:"allowOut"`
	DenyOut            []string                   `json:"denyOut"`
	EgressProxy        json.RawMessage            `json:"egressProxy"`
	MaskRequestHost    string                     `json:"maskRequestHost"`
	Rules              map[string]json.RawMessage `json:"rules"`
}

// unsupportedSetting names the first setting of req that roost cannot
// honour, with why, as an errdefs.ErrInvalid (400): a sandbox asked to be
// locked down must not start open.
func unsupportedSetting(req createRequest) error {
	n := req.Network
	if n == nil {
		n = &networkRequest{}
	}
	for _, c := range []struct {
		set        bool
		name, what string
	}{
		{len(n.AllowOut) > 0, "network.allowOut", "egress allow-lists"},
		{len(n.DenyOut) > 0, "network.denyOut", "egress deny-lists"},
		{isSet(n.EgressProxy), "network.egressProxy", "egress proxies"},
		{n.MaskRequestHost != "", "network.maskRequestHost", "masking the request host"},
		{len(n.Rules) > 0, "network.rules", "egress request rules"},
		{isSet(req.MCP), "mcp", "the MCP gateway"},
		{isSet(req.IAM), "iam", "sandbox IAM"},
	} {
		if c.set {
			return fmt.Errorf("%s: roost does not support %s yet, and does not start a sandbox without a setting it was asked for: %w", c.name, c.what, errdefs.ErrInvalid)
		}
	}
	return nil
}

// isSet says whether a JSON value was given and is not null.
func isSet(v json.RawMessage) bool { return len(v) > 0 && string(v) != "null" }

// autoResumeConfig is E2B's SandboxAutoResumeConfig.
type autoResumeConfig struct {
	Enabled bool `json:"enabled"`
}

// createParams is a validated createRequest.
type createParams struct {
	Template   string
	Timeout    time.Duration
	Metadata   map[string]string
	EnvVars    map[string]string
	AutoPause  bool
	AutoResume bool // traffic resumes it while paused; needs AutoPause
	// AutoPauseFilesystem: the pause on timeout keeps only the files
	// (autoPauseMemory: false); needs AutoPause.
	AutoPauseFilesystem bool
	Secure              bool // envd requires an access token
	AllowInternet       bool
	PublicTraffic       bool
	VCPUs               int32
	MemoryMB            int32
	DiskMB              int32
	Volumes             []volumeMountRequest
}

// parseCreate decodes and validates a create body. Errors wrap
// errdefs.ErrInvalid.
func parseCreate(body io.Reader) (createParams, error) {
	var req createRequest
	if err := decodeJSON(body, &req); err != nil && !errors.Is(err, io.EOF) { // an empty body is {}
		return createParams{}, err
	}
	if err := unsupportedSetting(req); err != nil {
		return createParams{}, err
	}
	p := createParams{
		Template: req.TemplateID, Metadata: req.Metadata, EnvVars: req.EnvVars, AutoPause: req.AutoPause,
		Secure: true, AllowInternet: true, PublicTraffic: true,
	}
	if len(req.VolumeMounts) > 0 {
		p.Volumes = req.VolumeMounts
	}
	if err := checkVolumeMounts(p.Volumes); err != nil {
		return createParams{}, err
	}
	if p.Template == "" {
		p.Template = defaultTmpl
	}
	if _, _, err := splitTemplateRef(p.Template); err != nil {
		return createParams{}, fmt.Errorf("templateID: %w", err)
	}
	var err error
	if p.Timeout, err = parseTimeout(req.Timeout, defaultTimeout); err != nil {
		return createParams{}, err
	}
	if req.AutoResume != nil {
		p.AutoResume = req.AutoResume.Enabled
	}
	if p.AutoResume && !p.AutoPause {
		// A sandbox killed on timeout has nothing to resume.
		return createParams{}, fmt.Errorf("autoResume.enabled requires autoPause: true: %w", errdefs.ErrInvalid)
	}
	p.AutoPauseFilesystem = req.AutoPauseMemory != nil && !*req.AutoPauseMemory
	if p.AutoPauseFilesystem && !p.AutoPause {
		return createParams{}, fmt.Errorf("autoPauseMemory: false requires autoPause: true: %w", errdefs.ErrInvalid)
	}
	if req.Secure != nil {
		p.Secure = *req.Secure
	}
	if req.AllowInternetAccess != nil {
		p.AllowInternet = *req.AllowInternetAccess
	}
	if req.Network != nil && req.Network.AllowPublicTraffic != nil {
		p.PublicTraffic = *req.Network.AllowPublicTraffic
	}
	if size := mapSize(p.Metadata); size > maxMetadataLen {
		return createParams{}, fmt.Errorf("metadata of %d bytes: at most %d: %w", size, maxMetadataLen, errdefs.ErrInvalid)
	}
	for k, v := range p.EnvVars {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return createParams{}, fmt.Errorf("env var %q: names must be non-empty without '=' or NUL, values without NUL: %w", k, errdefs.ErrInvalid)
		}
	}
	for _, r := range []struct {
		name string
		v    int64
		max  int64
		dst  *int32
	}{{"cpuCount", req.CPUCount, maxVCPUs, &p.VCPUs}, {"memoryMB", req.MemoryMB, maxMemoryMB, &p.MemoryMB}, {"diskSizeMB", req.DiskMB, maxMemoryMB, &p.DiskMB}} {
		if r.v < 0 || r.v > r.max {
			return createParams{}, fmt.Errorf("%s %d: must be between 0 (default) and %d: %w", r.name, r.v, r.max, errdefs.ErrInvalid)
		}
		*r.dst = int32(r.v)
	}
	return p, nil
}

func mapSize(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// validTemplate accepts template names the agent can look up.
func validTemplate(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// parseTimeout turns E2B's timeout in seconds into a duration; absent
// takes def.
func parseTimeout(secs *int64, def time.Duration) (time.Duration, error) {
	if secs == nil {
		return def, nil
	}
	if *secs < 1 || *secs > int64(maxTimeout/time.Second) {
		return 0, fmt.Errorf("timeout %d: must be between 1 and %d seconds: %w", *secs, int64(maxTimeout/time.Second), errdefs.ErrInvalid)
	}
	return time.Duration(*secs) * time.Second, nil
}

// timeoutRequest is the body of POST /sandboxes/{id}/timeout and
// POST /v2/sandboxes/{id}/connect.
type timeoutRequest struct {
	Timeout *int64 `json:"timeout"`
}

// parseSetTimeout decodes POST /sandboxes/{id}/timeout's body: a
// required timeout of 0 (end now, as E2B's SDKs use to force the timeout
// action) up to maxTimeout seconds.
func parseSetTimeout(body io.Reader) (time.Duration, error) {
	var req timeoutRequest
	if err := decodeJSON(body, &req); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if req.Timeout == nil {
		return 0, fmt.Errorf("timeout is required: %w", errdefs.ErrInvalid)
	}
	if *req.Timeout == 0 {
		return 0, nil
	}
	return parseTimeout(req.Timeout, 0)
}

// parseTimeoutBody decodes a {timeout} body. An empty body or an absent
// timeout takes def; def 0 makes the timeout required.
func parseTimeoutBody(body io.Reader, def time.Duration) (time.Duration, error) {
	var req timeoutRequest
	if err := decodeJSON(body, &req); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if req.Timeout == nil && def == 0 {
		return 0, fmt.Errorf("timeout is required: %w", errdefs.ErrInvalid)
	}
	return parseTimeout(req.Timeout, def)
}

// decodeJSON decodes one JSON object of at most maxBodyBytes. An empty
// body is io.EOF (wrapped); anything malformed wraps errdefs.ErrInvalid.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(body, maxBodyBytes))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("empty body: %w", err)
		}
		return fmt.Errorf("decode body: %v: %w", err, errdefs.ErrInvalid)
	}
	return nil
}

// parseMetadataQuery parses E2B's metadata filter: the query parameter's
// value is itself a URL-encoded query, "k=v&k2=v2". Every key must be
// non-empty and appear once.
func parseMetadataQuery(s string) (map[string]string, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxMetadataLen {
		return nil, fmt.Errorf("metadata filter of %d bytes: at most %d: %w", len(s), maxMetadataLen, errdefs.ErrInvalid)
	}
	vals, err := url.ParseQuery(s)
	if err != nil {
		return nil, fmt.Errorf("metadata filter %q: %v: %w", s, err, errdefs.ErrInvalid)
	}
	md := make(map[string]string, len(vals))
	for k, vs := range vals {
		if k == "" || len(vs) != 1 {
			return nil, fmt.Errorf("metadata filter %q: each key non-empty and once: %w", s, errdefs.ErrInvalid)
		}
		md[k] = vs[0]
	}
	return md, nil
}

// parseStates parses the list's state filter: a comma-separated (or
// repeated) list of "running" and "paused". None means both.
func parseStates(values []string) ([]store.SandboxState, error) {
	var states []store.SandboxState
	seen := map[store.SandboxState]bool{}
	for _, v := range values {
		for s := range strings.SplitSeq(v, ",") {
			st := store.SandboxState(strings.TrimSpace(s))
			switch st {
			case "":
				continue
			case store.SandboxRunning, store.SandboxPaused:
			default:
				return nil, fmt.Errorf("state %q: must be running or paused: %w", s, errdefs.ErrInvalid)
			}
			if !seen[st] {
				seen[st] = true
				states = append(states, st)
			}
		}
	}
	if len(states) == 0 {
		states = []store.SandboxState{store.SandboxRunning, store.SandboxPaused}
	}
	return states, nil
}

// maxListLimit is the largest page GET /v2/sandboxes gives, E2B's.
const maxListLimit = 100

// listQuery is GET /v2/sandboxes's query, parsed.
type listQuery struct {
	States       []store.SandboxState
	Metadata     map[string]string
	Order        store.Order // NewestFirst unless order=asc
	StartedAfter time.Time   // zero: no bound
	Template     string      // a template ID or alias; "" for any
	Limit        int
	NextToken    string
}

// parseListQuery parses the query E2B's description gives GET
// /v2/sandboxes: state, metadata, order (asc or desc, by start time,
// newest first by default), startedAfter (RFC 3339), template, limit
// (1-100) and nextToken. Errors wrap errdefs.ErrInvalid.
func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{Order: store.NewestFirst}
	var err error
	if lq.States, err = parseStates(q["state"]); err != nil {
		return listQuery{}, err
	}
	if lq.Metadata, err = parseMetadataQuery(q.Get("metadata")); err != nil {
		return listQuery{}, err
	}
	switch o := q.Get("order"); o {
	case "", "desc":
	case "asc":
		lq.Order = store.OldestFirst
	default:
		return listQuery{}, fmt.Errorf("order %q: must be asc or desc: %w", o, errdefs.ErrInvalid)
	}
	if v := q.Get("startedAfter"); v != "" {
		if lq.StartedAfter, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return listQuery{}, fmt.Errorf("startedAfter %q: must be an RFC 3339 date-time: %w", v, errdefs.ErrInvalid)
		}
	}
	lq.Template = q.Get("template")
	if l := q.Get("limit"); l != "" {
		n, ok := parsePositive(l)
		if !ok || n > maxListLimit {
			return listQuery{}, fmt.Errorf("limit %q: must be between 1 and %d: %w", l, maxListLimit, errdefs.ErrInvalid)
		}
		lq.Limit = n
	}
	lq.NextToken = q.Get("nextToken")
	return lq, nil
}

// parsePositive parses a small positive decimal.
func parsePositive(s string) (int, bool) {
	if s == "" || len(s) > 7 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, n > 0
}

// refreshRequest is the body of POST /sandboxes/{id}/refreshes.
type refreshRequest struct {
	Duration *int64 `json:"duration"`
}

// parseRefreshBody decodes a {duration} body: 0 to 3600 seconds, raised
// to minRefresh; an empty body or an absent duration is minRefresh.
func parseRefreshBody(body io.Reader) (time.Duration, error) {
	var req refreshRequest
	if err := decodeJSON(body, &req); err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	if req.Duration == nil {
		return minRefresh, nil
	}
	if *req.Duration < 0 || *req.Duration > int64(maxRefresh/time.Second) {
		return 0, fmt.Errorf("duration %d: must be between 0 and %d seconds: %w", *req.Duration, int64(maxRefresh/time.Second), errdefs.ErrInvalid)
	}
	return max(time.Duration(*req.Duration)*time.Second, minRefresh), nil
}

// nonNegativeParam reads an optional integer query parameter of 0 or
// more; unit names it in the error ("unix seconds"). ok is false when it
// is absent. Errors wrap errdefs.ErrInvalid.
func nonNegativeParam(q url.Values, name, unit string) (n int64, ok bool, err error) {
	v := q.Get(name)
	if v == "" {
		return 0, false, nil
	}
	n, err = strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("%s %q: must be %s, 0 or more: %w", name, v, unit, errdefs.ErrInvalid)
	}
	return n, true, nil
}

// invalidf is a client's mistake, worded by format (errdefs.ErrInvalid).
func invalidf(format string, a ...any) error {
	return fmt.Errorf(format+": %w", append(a, errdefs.ErrInvalid)...)
}
