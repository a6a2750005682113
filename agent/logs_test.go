package agent

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func TestParseLogLine(t *testing.T) {
	prev := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := time.Date(2026, 1, 2, 3, 4, 6, 123456789, time.UTC)
	for _, tc := range []struct {
		name  string
		line  string
		want  LogEntry
		timed bool
	}{
		{"envd info", `{"time":"2026-01-02T03:04:06.123456789Z","level":"INFO","msg":"envd listening","addr":"0.0.0.0:49983","forward_ports":true}`,
			LogEntry{Time: at, Level: LogInfo, Message: "envd listening", Fields: map[string]string{"addr": "0.0.0.0:49983", "forward_ports": "true"}}, true},
		{"offset zone", `{"time":"2026-01-02T05:04:06.123456789+02:00","level":"WARN","msg":"port scan failed","err":"boom"}`,
			LogEntry{Time: at, Level: LogWarn, Message: "port scan failed", Fields: map[string]string{"err": "boom"}}, true},
		{"level with offset", `{"time":"2026-01-02T03:04:06.123456789Z","level":"WARN+2","msg":"m"}`,
			LogEntry{Time: at, Level: LogWarn, Message: "m", Fields: map[string]string{}}, true},
		{"error above", `{"time":"2026-01-02T03:04:06.123456789Z","level":"ERROR+4","msg":"m"}`,
			LogEntry{Time: at, Level: LogError, Message: "m", Fields: map[string]string{}}, true},
		{"debug below", `{"time":"2026-01-02T03:04:06.123456789Z","level":"DEBUG-4","msg":"m"}`,
			LogEntry{Time: at, Level: LogDebug, Message: "m", Fields: map[string]string{}}, true},
		{"lower case level", `{"time":"2026-01-02T03:04:06.123456789Z","level":"error","msg":"m"}`,
			LogEntry{Time: at, Level: LogError, Message: "m", Fields: map[string]string{}}, true},
		{"unknown level", `{"time":"2026-01-02T03:04:06.123456789Z","level":"TRACE","msg":"m"}`,
			LogEntry{Time: at, Level: LogInfo, Message: "m", Fields: map[string]string{}}, true},
		{"no level, no msg", `{"time":"2026-01-02T03:04:06.123456789Z"}`,
			LogEntry{Time: at, Level: LogInfo, Fields: map[string]string{}}, true},
		{"values as JSON", `{"time":"2026-01-02T03:04:06.123456789Z","level":"INFO","msg":"m","n":42,"ok":false,"nil":null,"group":{"a": [1, "x"]}}`,
			LogEntry{Time: at, Level: LogInfo, Message: "m", Fields: map[string]string{"n": "42", "ok": "false", "nil": "null", "group": `{"a":[1,"x"]}`}}, true},
		{"plain", "roost init: envd exited (exit status 2); restarting",
			LogEntry{Time: prev, Level: LogInfo, Message: "roost init: envd exited (exit status 2); restarting", Fields: map[string]string{}}, false},
		{"kernel", "[    0.512345] Run /sbin/init as init process",
			LogEntry{Time: prev, Level: LogInfo, Message: "[    0.512345] Run /sbin/init as init process", Fields: map[string]string{}}, false},
		{"JSON without time", `{"level":"ERROR","msg":"m"}`,
			LogEntry{Time: prev, Level: LogInfo, Message: `{"level":"ERROR","msg":"m"}`, Fields: map[string]string{}}, false},
		{"bad time", `{"time":"yesterday","msg":"m"}`,
			LogEntry{Time: prev, Level: LogInfo, Message: `{"time":"yesterday","msg":"m"}`, Fields: map[string]string{}}, false},
		{"broken JSON", `{"time":"2026-01-02T03:04:06Z","msg":`,
			LogEntry{Time: prev, Level: LogInfo, Message: `{"time":"2026-01-02T03:04:06Z","msg":`, Fields: map[string]string{}}, false},
		{"JSON array", `["time"]`,
			LogEntry{Time: prev, Level: LogInfo, Message: `["time"]`, Fields: map[string]string{}}, false},
		{"not UTF-8", "caf\xe9",
			LogEntry{Time: prev, Level: LogInfo, Message: "caf\uFFFD", Fields: map[string]string{}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, timed := parseLogLine(tc.line, prev)
			if timed != tc.timed || !got.Time.Equal(tc.want.Time) || got.Level != tc.want.Level ||
				got.Message != tc.want.Message || !maps.Equal(got.Fields, tc.want.Fields) || got.Fields == nil {
				t.Fatalf("parseLogLine(%q) = %+v, %v; want %+v, %v", tc.line, got, timed, tc.want, tc.timed)
			}
		})
	}
}

func FuzzParseLogLine(f *testing.F) {
	f.Add(`{"time":"2026-01-02T03:04:06Z","level":"INFO","msg":"m","k":{"a":1}}`)
	f.Add("plain \xff")
	f.Fuzz(func(t *testing.T, line string) {
		prev := time.Unix(1, 0)
		e, timed := parseLogLine(line, prev)
		if !timed && !e.Time.Equal(prev) {
			t.Fatalf("untimed entry at %v", e.Time)
		}
		if e.Fields == nil || !validLevel(e.Level) {
			t.Fatalf("entry %+v", e)
		}
		for k, v := range e.Fields {
			if validUTF8(k) != k || validUTF8(v) != v {
				t.Fatalf("field %q=%q is not UTF-8", k, v)
			}
		}
		if validUTF8(e.Message) != e.Message {
			t.Fatalf("message %q is not UTF-8", e.Message)
		}
	})
}

func validLevel(l LogLevel) bool {
	return l == LogDebug || l == LogInfo || l == LogWarn || l == LogError
}

// testLog writes a log of n JSON lines, one a second from base (levels
// cycling debug, info, warn, error; messages "m0", "m1", ...), each
// followed by a plain line "plain<i>".
func testLog(t *testing.T, base time.Time, n int) string {
	t.Helper()
	levels := []string{"DEBUG", "INFO", "WARN", "ERROR"}
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"time":%q,"level":%q,"msg":"m%d","i":%d}`+"\r\n", base.Add(time.Duration(i)*time.Second).Format(time.RFC3339Nano), levels[i%4], i, i)
		fmt.Fprintf(&b, "plain%d\n", i)
	}
	path := filepath.Join(t.TempDir(), "init.log")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func messages(es []LogEntry) string {
	var out []string
	for _, e := range es {
		out = append(out, e.Message)
	}
	return strings.Join(out, " ")
}

func TestReadLog(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	path := testLog(t, base, 6)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	for _, tc := range []struct {
		name string
		q    LogQuery
		want string
	}{
		{"all", LogQuery{Limit: 100}, "m0 plain0 m1 plain1 m2 plain2 m3 plain3 m4 plain4 m5 plain5"},
		{"limit", LogQuery{Limit: 3}, "m0 plain0 m1"},
		{"limit 0", LogQuery{}, ""},
		{"backward", LogQuery{Limit: 3, Backward: true}, "plain5 m5 plain4"},
		{"backward all", LogQuery{Limit: 100, Backward: true}, "plain5 m5 plain4 m4 plain3 m3 plain2 m2 plain1 m1 plain0 m0"},
		// A plain line has its JSON line's time, so a cursor takes both.
		{"cursor", LogQuery{Limit: 3, Cursor: at(4)}, "m4 plain4 m5"},
		{"cursor between", LogQuery{Limit: 100, Cursor: at(4).Add(time.Millisecond)}, "m5 plain5"},
		{"cursor within millisecond", LogQuery{Limit: 100, Cursor: at(5).Add(time.Microsecond)}, "m5 plain5"},
		{"cursor backward", LogQuery{Limit: 3, Cursor: at(2), Backward: true}, "plain2 m2 plain1"},
		{"cursor past end", LogQuery{Limit: 100, Cursor: at(60)}, ""},
		{"level", LogQuery{Limit: 100, MinLevel: LogWarn}, "m2 m3"},
		{"level error backward", LogQuery{Limit: 100, MinLevel: LogError, Backward: true}, "m3"},
		{"search", LogQuery{Limit: 100, Search: "plain"}, "plain0 plain1 plain2 plain3 plain4 plain5"},
		{"search is case-sensitive", LogQuery{Limit: 100, Search: "PLAIN"}, ""},
		{"everything", LogQuery{Limit: 1, Search: "m", MinLevel: LogInfo, Cursor: at(4), Backward: true}, "m3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readLog(path, base.Add(-time.Hour), tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if messages(got) != tc.want {
				t.Fatalf("read %+v: %q, want %q", tc.q, messages(got), tc.want)
			}
		})
	}
}

func TestReadLogFields(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	got, err := readLog(testLog(t, base, 1), base, LogQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Level != LogDebug || got[0].Fields["i"] != "0" || len(got[0].Fields) != 1 ||
		got[1].Level != LogInfo || !got[1].Time.Equal(base) || len(got[1].Fields) != 0 {
		t.Fatalf("entries %+v", got)
	}
}

// A plain line before any JSON line has the time the caller gives (the
// sandbox's start).
func TestReadLogStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "init.log")
	if err := os.WriteFile(path, []byte("roost-init [0.01s]: booted\nno newline at the end"), 0o600); err != nil {
		t.Fatal(err)
	}
	started := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	got, err := readLog(path, started, LogQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if messages(got) != "roost-init [0.01s]: booted no newline at the end" || !got[0].Time.Equal(started) || !got[1].Time.Equal(started) {
		t.Fatalf("entries %+v", got)
	}
}

// A log larger than the window is read from its tail, from the first
// whole line; a line longer than maxLogLine is cut, and the next one is
// read whole.
func TestReadLogBounds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "init.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Repeat("x", 1000) + "\n"
	for range logWindow/len(line) + 100 {
		if _, err := f.WriteString(line); err != nil {
			t.Fatal(err)
		}
	}
	long := strings.Repeat("y", 3*maxLogLine)
	if _, err := f.WriteString(long + "\nlast\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := readLog(path, time.Now(), LogQuery{Limit: MaxLogLimit})
	if err != nil {
		t.Fatal(err)
	}
	var xs, bytesRead int
	for _, e := range got {
		bytesRead += len(e.Message) + 1
		if strings.Trim(e.Message, "x") == "" {
			xs++
			if len(e.Message) != 1000 {
				t.Fatalf("a window's first line is %d bytes: partial", len(e.Message))
			}
		}
	}
	if bytesRead > logWindow {
		t.Fatalf("read %d bytes of a %d-byte window", bytesRead, logWindow)
	}
	if n := len(got); n < 3 || got[n-2].Message != long[:maxLogLine] || got[n-1].Message != "last" || xs != n-2 {
		t.Fatalf("%d entries, %d of x; last two %.20q (%d bytes), %q", n, xs, got[n-2].Message, len(got[n-2].Message), got[n-1].Message)
	}
}

func TestLogQueryValidate(t *testing.T) {
	for _, q := range []LogQuery{{Limit: -1}, {Limit: MaxLogLimit + 1}, {Limit: 1, Search: strings.Repeat("s", maxLogSearch+1)}} {
		if err := q.validate(); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("validate %+v: %v, want invalid", q, err)
		}
	}
	if err := (LogQuery{Limit: MaxLogLimit, Search: strings.Repeat("s", maxLogSearch)}).validate(); err != nil {
		t.Errorf("validate the bounds: %v", err)
	}
}
