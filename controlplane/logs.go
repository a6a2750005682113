package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// A sandbox's logs are what its init and envd wrote to its console, which
// its agent keeps in the sandbox's state directory and reads on request
// (GetSandboxLogs: envd's JSON lines with their own time, level and
// fields; any other line level info, timed as the nearest earlier JSON
// line). They last as long as the sandbox: paused sandboxes have theirs,
// and a killed sandbox's go with it, so its logs answer 404 as an unknown
// sandbox's do (E2B keeps ended sandboxes' logs for a while; roost keeps
// none).

// Limits of E2B's logs routes.
const (
	defaultLogLimit = 1000
	maxLogLimitV2   = 1000
	// maxLogLimit bounds the legacy route's limit, which E2B leaves
	// unbounded: the most entries an agent returns at once.
	maxLogLimit = 10000
	// maxLogSearch is E2B's bound on search, in characters.
	maxLogSearch = 256
	// maxLogMillis is the last millisecond a protobuf Timestamp holds
	// (9999-12-31T23:59:59.999Z); no entry is later.
	maxLogMillis = 253402300799999
)

// logEntryJSON is E2B's SandboxLogEntry.
type logEntryJSON struct {
	Timestamp time.Time         `json:"timestamp"`
	Level     string            `json:"level"`
	Message   string            `json:"message"`
	Fields    map[string]string `json:"fields"`
}

// logLineJSON is E2B's SandboxLog: a line as one JSON object, which
// E2B's CLI parses to print it.
type logLineJSON struct {
	Timestamp time.Time `json:"timestamp"`
	Line      string    `json:"line"`
}

// sandboxLogsJSON is E2B's SandboxLogs: the same entries two ways.
type sandboxLogsJSON struct {
	Logs       []logLineJSON  `json:"logs"`
	LogEntries []logEntryJSON `json:"logEntries"`
}

// sandboxLogsV2JSON is E2B's SandboxLogsV2Response.
type sandboxLogsV2JSON struct {
	Logs []logEntryJSON `json:"logs"`
}

var logLevelNames = map[hostagentv1.LogLevel]string{
	hostagentv1.LogLevel_LOG_LEVEL_DEBUG: "debug",
	hostagentv1.LogLevel_LOG_LEVEL_INFO:  "info",
	hostagentv1.LogLevel_LOG_LEVEL_WARN:  "warn",
	hostagentv1.LogLevel_LOG_LEVEL_ERROR: "error",
}

var logLevels = func() map[string]hostagentv1.LogLevel {
	m := map[string]hostagentv1.LogLevel{}
	for l, name := range logLevelNames {
		m[name] = l
	}
	return m
}()

// sandboxLogs is GET /sandboxes/{id}/logs, E2B's legacy logs: up to
// limit entries (default 1000) from start (ms) on, oldest first.
func (s *Server) sandboxLogs(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	s.serveLogs(w, r, key, parseLogsQuery, func(entries []*hostagentv1.LogEntry) any {
		out := sandboxLogsJSON{Logs: make([]logLineJSON, 0, len(entries)), LogEntries: make([]logEntryJSON, 0, len(entries))}
		for _, e := range entries {
			j := logEntryView(e)
			out.LogEntries = append(out.LogEntries, j)
			out.Logs = append(out.Logs, logLineJSON{Timestamp: j.Timestamp, Line: logLine(j)})
		}
		return out
	})
}

// sandboxLogsV2 is GET /v2/sandboxes/{id}/logs: up to limit entries
// (default and at most 1000) from cursor (ms), newest first unless
// direction is forward (as E2B's API answers), at or above level, whose
// message contains search.
func (s *Server) sandboxLogsV2(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	s.serveLogs(w, r, key, parseLogsQueryV2, func(entries []*hostagentv1.LogEntry) any {
		out := sandboxLogsV2JSON{Logs: make([]logEntryJSON, 0, len(entries))}
		for _, e := range entries {
			out.Logs = append(out.Logs, logEntryView(e))
		}
		return out
	})
}

// serveLogs answers a logs route: its query parsed by parse, the entries
// read from the sandbox's agent, the body made by render.
func (s *Server) serveLogs(w http.ResponseWriter, r *http.Request, key store.APIKey,
	parse func(url.Values) (*hostagentv1.GetSandboxLogsRequest, error), render func([]*hostagentv1.LogEntry) any) {
	req, err := parse(r.URL.Query())
	if err != nil {
		s.fail(w, r, "sandbox logs", err)
		return
	}
	entries, err := s.readLogs(r, key, req)
	if err != nil {
		s.fail(w, r, "sandbox logs", err)
		return
	}
	writeJSON(w, http.StatusOK, render(entries))
}

// readLogs asks the agent of the path's sandbox (of the caller's team)
// for its logs. A sandbox its agent no longer has is not found.
func (s *Server) readLogs(r *http.Request, key store.APIKey, req *hostagentv1.GetSandboxLogsRequest) ([]*hostagentv1.LogEntry, error) {
	sb, err := s.teamSandbox(r, key)
	if err != nil {
		return nil, err
	}
	h, err := s.hostOf(r.Context(), sb)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(r.Context(), rpcTimeout)
	defer cancel()
	req.SandboxId = sb.ID
	resp, err := s.agents.For(h).GetSandboxLogs(ctx, connect.NewRequest(req))
	err = errdefs.FromConnect("agent sandbox logs", err)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, fmt.Errorf("sandbox %q not found: %w", sb.ID, errdefs.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	return resp.Msg.GetEntries(), nil
}

func logEntryView(e *hostagentv1.LogEntry) logEntryJSON {
	fields := e.GetFields()
	if fields == nil {
		fields = map[string]string{}
	}
	return logEntryJSON{Timestamp: e.GetTime().AsTime().UTC(), Level: logLevelNames[e.GetLevel()], Message: e.GetMessage(), Fields: fields}
}

// logLine is an entry as E2B's legacy line: one JSON object of its
// fields, its level and its message.
func logLine(e logEntryJSON) string {
	obj := make(map[string]string, len(e.Fields)+2)
	for k, v := range e.Fields {
		obj[k] = v
	}
	obj["level"], obj["message"] = e.Level, e.Message
	b, err := json.Marshal(obj)
	if err != nil { // strings always encode
		return e.Message
	}
	return string(b)
}

// parseLogsQuery parses the legacy route's query: start (ms) and limit
// (0 to maxLogLimit). Errors wrap errdefs.ErrInvalid.
func parseLogsQuery(q url.Values) (*hostagentv1.GetSandboxLogsRequest, error) {
	req := &hostagentv1.GetSandboxLogsRequest{Direction: hostagentv1.LogDirection_LOG_DIRECTION_FORWARD}
	var err error
	if req.Cursor, err = parseLogMillis(q, "start"); err != nil {
		return nil, err
	}
	if req.Limit, err = parseLogLimit(q, maxLogLimit); err != nil {
		return nil, err
	}
	return req, nil
}

// parseLogsQueryV2 parses the /v2 route's query: cursor (ms), limit (0
// to 1000), direction (backward by default), level and search. Errors
// wrap errdefs.ErrInvalid.
func parseLogsQueryV2(q url.Values) (*hostagentv1.GetSandboxLogsRequest, error) {
	req := &hostagentv1.GetSandboxLogsRequest{Direction: hostagentv1.LogDirection_LOG_DIRECTION_BACKWARD}
	var err error
	if req.Cursor, err = parseLogMillis(q, "cursor"); err != nil {
		return nil, err
	}
	if req.Limit, err = parseLogLimit(q, maxLogLimitV2); err != nil {
		return nil, err
	}
	switch d := q.Get("direction"); d {
	case "", "backward":
	case "forward":
		req.Direction = hostagentv1.LogDirection_LOG_DIRECTION_FORWARD
	default:
		return nil, fmt.Errorf("direction %q: must be forward or backward: %w", d, errdefs.ErrInvalid)
	}
	if l := q.Get("level"); l != "" {
		level, ok := logLevels[l]
		if !ok {
			return nil, fmt.Errorf("level %q: must be debug, info, warn or error: %w", l, errdefs.ErrInvalid)
		}
		req.MinLevel = level
	}
	req.Search = q.Get("search")
	if n := utf8.RuneCountInString(req.Search); n > maxLogSearch {
		return nil, fmt.Errorf("search of %d characters: at most %d: %w", n, maxLogSearch, errdefs.ErrInvalid)
	}
	return req, nil
}

// parseLogMillis parses the query's name as a time in Unix milliseconds,
// 0 or more; nil when absent.
func parseLogMillis(q url.Values, name string) (*timestamppb.Timestamp, error) {
	ms, ok, err := nonNegativeParam(q, name, "a time in milliseconds since the Unix epoch")
	if err != nil || !ok {
		return nil, err
	}
	return timestamppb.New(time.UnixMilli(min(ms, maxLogMillis))), nil
}

// parseLogLimit parses the query's limit, 0 to most; defaultLogLimit
// when absent.
func parseLogLimit(q url.Values, most int) (*int32, error) {
	v := q.Get("limit")
	if v == "" {
		return proto.Int32(defaultLogLimit), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > most {
		return nil, fmt.Errorf("limit %q: must be between 0 and %d: %w", v, most, errdefs.ErrInvalid)
	}
	return proto.Int32(int32(n)), nil
}
