package agent

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"time"
)

// parseLogLine makes an entry of one line of a sandbox's log (without its
// line end) and says whether the line carried its own time.
//
// envd logs with log/slog's JSON handler: a JSON object with its time,
// level and msg gives them, and its other keys become fields (strings as
// they are, other values as compact JSON). Any other line (the init's
// messages, a VM's kernel, a JSON line without a time) is a message of
// level info with no fields, timed as prev: the time of the nearest
// earlier JSON line, which the caller tracks.
func parseLogLine(line string, prev time.Time) (LogEntry, bool) {
	if e, ok := parseJSONLogLine(line); ok {
		return e, true
	}
	return LogEntry{Time: prev, Level: LogInfo, Message: validUTF8(line), Fields: map[string]string{}}, false
}

func parseJSONLogLine(line string) (LogEntry, bool) {
	if !strings.HasPrefix(line, "{") {
		return LogEntry{}, false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		return LogEntry{}, false
	}
	var at time.Time
	if err := json.Unmarshal(obj[slog.TimeKey], &at); err != nil || at.IsZero() {
		return LogEntry{}, false
	}
	e := LogEntry{Time: at, Level: LogInfo, Fields: make(map[string]string, len(obj))}
	var level string
	if json.Unmarshal(obj[slog.LevelKey], &level) == nil {
		e.Level = logLevel(level)
	}
	if msg, ok := obj[slog.MessageKey]; ok {
		e.Message = fieldValue(msg)
	}
	for k, v := range obj {
		if k != slog.TimeKey && k != slog.LevelKey && k != slog.MessageKey {
			e.Fields[k] = fieldValue(v)
		}
	}
	return e, true
}

// logLevel reads a slog level name ("INFO", "WARN+2", "debug") as the
// level it falls in: debug, info, warn or error. A name slog does not
// know is info.
func logLevel(name string) LogLevel {
	var l slog.Level
	if err := l.UnmarshalText([]byte(name)); err != nil {
		return LogInfo
	}
	switch {
	case l < slog.LevelInfo:
		return LogDebug
	case l < slog.LevelWarn:
		return LogInfo
	case l < slog.LevelError:
		return LogWarn
	}
	return LogError
}

// fieldValue is a JSON value as a field shows it: a string as it is,
// anything else as compact JSON.
func fieldValue(v json.RawMessage) string {
	var s string
	if bytes.HasPrefix(v, []byte(`"`)) && json.Unmarshal(v, &s) == nil {
		return s
	}
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return validUTF8(string(v))
	}
	return validUTF8(b.String())
}

// validUTF8 replaces what is not UTF-8 (a console line can hold any
// bytes; protobuf strings must be UTF-8).
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }
