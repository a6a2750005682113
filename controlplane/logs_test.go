package controlplane

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
)

func TestParseLogsQuery(t *testing.T) {
	const (
		forward  = hostagentv1.LogDirection_LOG_DIRECTION_FORWARD
		backward = hostagentv1.LogDirection_LOG_DIRECTION_BACKWARD
	)
	at := func(ms int64) *timestamppb.Timestamp { return timestamppb.New(time.UnixMilli(ms)) }
	for _, tc := range []struct {
		name  string
		v2    bool
		query string
		want  *hostagentv1.GetSandboxLogsRequest // nil: invalid
	}{
		{"legacy defaults", false, "", &hostagentv1.GetSandboxLogsRequest{Direction: forward, Limit: proto.Int32(1000)}},
		{"legacy start and limit", false, "start=1700000000123&limit=5", &hostagentv1.GetSandboxLogsRequest{Direction: forward, Limit: proto.Int32(5), Cursor: at(1700000000123)}},
		{"legacy limit 0", false, "limit=0", &hostagentv1.GetSandboxLogsRequest{Direction: forward, Limit: proto.Int32(0)}},
		{"legacy limit beyond 1000", false, "limit=10000", &hostagentv1.GetSandboxLogsRequest{Direction: forward, Limit: proto.Int32(10000)}},
		{"legacy ignores v2's", false, "direction=sideways&level=loud", &hostagentv1.GetSandboxLogsRequest{Direction: forward, Limit: proto.Int32(1000)}},
		{"legacy limit too large", false, "limit=10001", nil},
		{"legacy negative start", false, "start=-1", nil},
		{"legacy start not a number", false, "start=yesterday", nil},
		{"legacy limit not a number", false, "limit=ten", nil},
		{"v2 defaults", true, "", &hostagentv1.GetSandboxLogsRequest{Direction: backward, Limit: proto.Int32(1000)}},
		{"v2 everything", true, "cursor=42&limit=7&direction=forward&level=warn&search=port+forward",
			&hostagentv1.GetSandboxLogsRequest{Direction: forward, Limit: proto.Int32(7), Cursor: at(42), MinLevel: hostagentv1.LogLevel_LOG_LEVEL_WARN, Search: "port forward"}},
		{"v2 backward", true, "direction=backward&level=debug", &hostagentv1.GetSandboxLogsRequest{Direction: backward, Limit: proto.Int32(1000), MinLevel: hostagentv1.LogLevel_LOG_LEVEL_DEBUG}},
		{"v2 far cursor", true, "cursor=9223372036854775807", &hostagentv1.GetSandboxLogsRequest{Direction: backward, Limit: proto.Int32(1000), Cursor: at(maxLogMillis)}},
		{"v2 search of 256 characters", true, "search=" + strings.Repeat("é", 256), &hostagentv1.GetSandboxLogsRequest{Direction: backward, Limit: proto.Int32(1000), Search: strings.Repeat("é", 256)}},
		{"v2 search too long", true, "search=" + strings.Repeat("s", 257), nil},
		{"v2 limit too large", true, "limit=1001", nil},
		{"v2 negative limit", true, "limit=-1", nil},
		{"v2 cursor overflows", true, "cursor=9223372036854775808", nil},
		{"v2 bad direction", true, "direction=sideways", nil},
		{"v2 level is lower case", true, "level=WARN", nil},
		{"v2 unknown level", true, "level=fatal", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			parse := parseLogsQuery
			if tc.v2 {
				parse = parseLogsQueryV2
			}
			got, err := parse(q)
			if tc.want == nil {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("%q: %v, %v; want invalid", tc.query, got, err)
				}
				return
			}
			if err != nil || !proto.Equal(got, tc.want) {
				t.Fatalf("%q: %v, %v; want %v", tc.query, got, err, tc.want)
			}
		})
	}
}

func TestLogViews(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)
	e := logEntryView(&hostagentv1.LogEntry{Time: timestamppb.New(at), Level: hostagentv1.LogLevel_LOG_LEVEL_WARN,
		Message: "port scan failed", Fields: map[string]string{"err": "boom", "message": "a field"}})
	if !e.Timestamp.Equal(at) || e.Level != "warn" || e.Message != "port scan failed" || e.Fields["err"] != "boom" {
		t.Fatalf("entry %+v", e)
	}
	var line map[string]string
	if err := json.Unmarshal([]byte(logLine(e)), &line); err != nil {
		t.Fatal(err)
	}
	if len(line) != 3 || line["level"] != "warn" || line["message"] != "port scan failed" || line["err"] != "boom" {
		t.Fatalf("line %v", line)
	}
	if plain := logEntryView(&hostagentv1.LogEntry{Time: timestamppb.New(at), Level: hostagentv1.LogLevel_LOG_LEVEL_INFO, Message: "roost init"}); plain.Fields == nil {
		t.Fatal("no fields is nil, want {}")
	}
}

func FuzzParseLogsQuery(f *testing.F) {
	f.Add("cursor=42&limit=7&direction=forward&level=warn&search=port")
	f.Add("start=-1&limit=99999999999999999999")
	f.Fuzz(func(t *testing.T, query string) {
		q, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		for most, parse := range map[int32]func(url.Values) (*hostagentv1.GetSandboxLogsRequest, error){maxLogLimit: parseLogsQuery, maxLogLimitV2: parseLogsQueryV2} {
			req, err := parse(q)
			if err != nil {
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("%q: %v, want invalid", query, err)
				}
				continue
			}
			if l := req.GetLimit(); l < 0 || l > most || req.Limit == nil || (req.Cursor != nil && req.Cursor.CheckValid() != nil) ||
				len([]rune(req.GetSearch())) > maxLogSearch || req.GetDirection() == hostagentv1.LogDirection_LOG_DIRECTION_UNSPECIFIED {
				t.Fatalf("%q: accepted %v", query, req)
			}
		}
	})
}
