package controlplane_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
)

// logEntry is E2B's SandboxLogEntry.
type logEntry struct {
	Timestamp time.Time         `json:"timestamp"`
	Level     string            `json:"level"`
	Message   string            `json:"message"`
	Fields    map[string]string `json:"fields"`
}

// legacyLogs is E2B's SandboxLogs.
type legacyLogs struct {
	Logs []struct {
		Timestamp time.Time `json:"timestamp"`
		Line      string    `json:"line"`
	} `json:"logs"`
	LogEntries []logEntry `json:"logEntries"`
}

// logsV2 reads GET /v2/sandboxes/{id}/logs with query.
func (e *testenv) logsV2(t *testing.T, id, query string) []logEntry {
	t.Helper()
	var out struct {
		Logs []logEntry `json:"logs"`
	}
	e.do("GET", "/v2/sandboxes/"+id+"/logs?"+query, e.key, nil).want(t, http.StatusOK).decode(t, &out)
	if out.Logs == nil {
		t.Fatalf("v2 logs %q: no logs array", query)
	}
	return out.Logs
}

// legacyLogs reads GET /sandboxes/{id}/logs with query.
func (e *testenv) legacyLogs(t *testing.T, id, query string) legacyLogs {
	t.Helper()
	var out legacyLogs
	e.do("GET", "/sandboxes/"+id+"/logs?"+query, e.key, nil).want(t, http.StatusOK).decode(t, &out)
	if out.Logs == nil || out.LogEntries == nil || len(out.Logs) != len(out.LogEntries) {
		t.Fatalf("legacy logs %q: %d lines, %d entries", query, len(out.Logs), len(out.LogEntries))
	}
	return out
}

// waitLogEntry polls the v2 route until an entry's message contains
// text, and returns the newest such entry.
func (e *testenv) waitLogEntry(t *testing.T, id, text string) logEntry {
	t.Helper()
	for range 400 {
		if got := e.logsV2(t, id, "search="+url.QueryEscape(text)); len(got) > 0 {
			return got[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no log entry with %q in %v", text, e.logsV2(t, id, ""))
	return logEntry{}
}

func TestSandboxLogs(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})
	other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
	if err != nil {
		t.Fatal(err)
	}
	id := e.create(t, map[string]any{"templateID": "base", "timeout": 300}).SandboxID
	// A server on loopback makes envd's port forwarder log.
	e.exec(t, id, map[string]any{"cmd": "(nohup python3 -m http.server 8124 --bind 127.0.0.1 >/dev/null 2>&1 &)"})
	forward := e.waitLogEntry(t, id, "port forward started")
	listening := e.waitLogEntry(t, id, "envd listening")
	if forward.Level != "info" || !strings.Contains(forward.Fields["target"], "8124") ||
		listening.Level != "info" || !strings.HasSuffix(listening.Fields["addr"], ":49983") || !listening.Timestamp.Before(forward.Timestamp) {
		t.Fatalf("envd's entries: %+v, %+v", listening, forward)
	}
	ms := func(at time.Time) string { return fmt.Sprint(at.UnixMilli()) }

	t.Run("legacy", func(t *testing.T) {
		all := e.legacyLogs(t, id, "")
		if !slices.IsSortedFunc(all.LogEntries, byTime) || !slices.ContainsFunc(all.LogEntries, sameEntry(forward)) {
			t.Fatalf("entries, oldest first: %+v", all.LogEntries)
		}
		for i, l := range all.Logs {
			// The line is JSON, with a level, as E2B's CLI parses it.
			var line map[string]string
			if err := json.Unmarshal([]byte(l.Line), &line); err != nil || line["level"] != all.LogEntries[i].Level ||
				line["message"] != all.LogEntries[i].Message || !l.Timestamp.Equal(all.LogEntries[i].Timestamp) {
				t.Fatalf("line %d %+v (%v) for entry %+v", i, l, err, all.LogEntries[i])
			}
		}
		from := e.legacyLogs(t, id, "start="+ms(forward.Timestamp))
		if len(from.LogEntries) == 0 || from.LogEntries[0].Timestamp.UnixMilli() < forward.Timestamp.UnixMilli() ||
			!slices.ContainsFunc(from.LogEntries, sameEntry(forward)) {
			t.Errorf("from %v: %+v", forward.Timestamp, from.LogEntries)
		}
		if one := e.legacyLogs(t, id, "limit=1"); len(one.LogEntries) != 1 || !sameEntry(all.LogEntries[0])(one.LogEntries[0]) {
			t.Errorf("limit 1: %+v", one.LogEntries)
		}
		if none := e.legacyLogs(t, id, "start="+ms(time.Now().Add(time.Hour))); len(none.LogEntries) != 0 {
			t.Errorf("from the future: %+v", none.LogEntries)
		}
	})

	t.Run("v2", func(t *testing.T) {
		back := e.logsV2(t, id, "")
		if !slices.IsSortedFunc(back, func(a, b logEntry) int { return byTime(b, a) }) {
			t.Fatalf("default order is not newest first: %+v", back)
		}
		fwd := e.logsV2(t, id, "direction=forward")
		if len(fwd) != len(back) || !slices.IsSortedFunc(fwd, byTime) {
			t.Fatalf("forward: %+v; backward: %+v", fwd, back)
		}
		if one := e.logsV2(t, id, "limit=1&direction=backward"); len(one) != 1 || !sameEntry(back[0])(one[0]) {
			t.Errorf("newest: %+v, want %+v", one, back[0])
		}
		if none := e.logsV2(t, id, "limit=0"); len(none) != 0 {
			t.Errorf("limit 0: %+v", none)
		}
		if warn := e.logsV2(t, id, "level=warn"); slices.ContainsFunc(warn, func(l logEntry) bool { return l.Level == "info" || l.Level == "debug" }) {
			t.Errorf("level warn: %+v", warn)
		}
		if info := e.logsV2(t, id, "level=info&search=envd+listening"); len(info) != 1 || !sameEntry(listening)(info[0]) {
			t.Errorf("level info, search: %+v", info)
		}
		if none := e.logsV2(t, id, "search=ENVD+LISTENING"); len(none) != 0 {
			t.Errorf("search is case-sensitive: %+v", none)
		}
		after := e.logsV2(t, id, "direction=forward&cursor="+ms(forward.Timestamp))
		if len(after) == 0 || after[0].Timestamp.UnixMilli() < forward.Timestamp.UnixMilli() || !slices.ContainsFunc(after, sameEntry(forward)) {
			t.Errorf("forward from %v: %+v", forward.Timestamp, after)
		}
		before := e.logsV2(t, id, "direction=backward&cursor="+ms(listening.Timestamp))
		if len(before) == 0 || slices.ContainsFunc(before, sameEntry(forward)) || !slices.ContainsFunc(before, sameEntry(listening)) {
			t.Errorf("backward from %v: %+v", listening.Timestamp, before)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, path := range []string{
			"/sandboxes/" + id + "/logs?start=-1",
			"/sandboxes/" + id + "/logs?start=soon",
			"/sandboxes/" + id + "/logs?limit=10001",
			"/sandboxes/" + id + "/logs?limit=-5",
			"/v2/sandboxes/" + id + "/logs?cursor=x",
			"/v2/sandboxes/" + id + "/logs?limit=1001",
			"/v2/sandboxes/" + id + "/logs?direction=up",
			"/v2/sandboxes/" + id + "/logs?level=fatal",
			"/v2/sandboxes/" + id + "/logs?search=" + strings.Repeat("s", 257),
		} {
			e.do("GET", path, e.key, nil).want(t, http.StatusBadRequest)
		}
		for _, path := range []string{"/sandboxes/" + id + "/logs", "/v2/sandboxes/" + id + "/logs"} {
			e.do("GET", path, other, nil).want(t, http.StatusNotFound)
			e.do("GET", path, "", nil).want(t, http.StatusUnauthorized)
			e.do("GET", strings.Replace(path, id, "nosuchsandbox", 1), e.key, nil).want(t, http.StatusNotFound)
		}
	})

	t.Run("paused", func(t *testing.T) {
		e.do("POST", "/sandboxes/"+id+"/pause", e.key, nil).want(t, http.StatusNoContent)
		if got := e.logsV2(t, id, "search=port+forward+started"); len(got) == 0 {
			t.Errorf("paused sandbox's logs: %+v", got)
		}
		e.legacyLogs(t, id, "")
	})

	t.Run("killed", func(t *testing.T) {
		e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
		e.do("GET", "/sandboxes/"+id+"/logs", e.key, nil).want(t, http.StatusNotFound)
		e.do("GET", "/v2/sandboxes/"+id+"/logs", e.key, nil).want(t, http.StatusNotFound)
	})
}

func byTime(a, b logEntry) int { return a.Timestamp.Compare(b.Timestamp) }

func sameEntry(want logEntry) func(logEntry) bool {
	return func(got logEntry) bool {
		if !got.Timestamp.Equal(want.Timestamp) || got.Level != want.Level || got.Message != want.Message || len(got.Fields) != len(want.Fields) {
			return false
		}
		for k, v := range want.Fields {
			if got.Fields[k] != v {
				return false
			}
		}
		return true
	}
}
