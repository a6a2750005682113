package controlplane

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func TestMetricsWindow(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	began := now.Add(-10 * time.Minute)
	ended := now.Add(-time.Minute)
	for _, tt := range []struct {
		name       string
		query      string
		began      time.Time
		ended      time.Time
		start, end time.Time // zero: the range is empty
		err        string    // in a 400's message
	}{
		{"defaults: from the start to now", "", began, time.Time{}, began, now, ""},
		{"a killed sandbox: to its end", "", began, ended, began, ended, ""},
		{"both given", "start=1699999990&end=1700000010", began, time.Time{}, time.Unix(1699999990, 0), time.Unix(1700000010, 0), ""},
		{"a second", "start=1700000000&end=1700000000", began, time.Time{}, now, now, ""},
		{"only the start", "start=1699999000", began, time.Time{}, time.Unix(1699999000, 0), now, ""},
		{"only the end", "end=1699999900", began, time.Time{}, began, time.Unix(1699999900, 0), ""},
		{"an end before the sandbox began", "end=1699990000", began, time.Time{}, time.Time{}, time.Time{}, ""},
		{"a start in the future", "start=1700000100", began, time.Time{}, time.Time{}, time.Time{}, ""},
		{"a day exactly", "start=1699913600", began, time.Time{}, time.Unix(1699913600, 0), now, ""},
		{"a sandbox older than the history: its last day", "", now.Add(-72 * time.Hour), time.Time{}, now.Add(-24 * time.Hour), now, ""},
		{"more than a day", "start=1699913599", began, time.Time{}, time.Time{}, time.Time{}, "longer than the 24h0m0s of metrics roost keeps"},
		{"ten years", "start=1384640000&end=1700000000", began, time.Time{}, time.Time{}, time.Time{}, "longer than the 24h0m0s"},
		{"from the epoch", "start=0", began, time.Time{}, time.Time{}, time.Time{}, "longer than"},
		{"reversed", "start=1700000010&end=1700000000", began, time.Time{}, time.Time{}, time.Time{}, "before start"},
		{"negative", "start=-1", began, time.Time{}, time.Time{}, time.Time{}, "0 or more"},
		{"not a number", "end=soon", began, time.Time{}, time.Time{}, time.Time{}, "0 or more"},
		{"not an integer", "start=1.5", began, time.Time{}, time.Time{}, time.Time{}, "0 or more"},
	} {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		win, err := parseMetricsWindow(q)
		var start, end time.Time
		var ok bool
		if err == nil {
			start, end, ok, err = win.resolve(tt.began, tt.ended, now)
		}
		if tt.err != "" {
			if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: error %v, want ErrInvalid saying %q", tt.name, err, tt.err)
			}
			continue
		}
		switch {
		case err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.start.IsZero() && ok:
			t.Errorf("%s: range %s to %s, want none", tt.name, start, end)
		case !tt.start.IsZero() && (!ok || !start.Equal(tt.start) || !end.Equal(tt.end)):
			t.Errorf("%s: range %s to %s (%v), want %s to %s", tt.name, start, end, ok, tt.start, tt.end)
		}
	}
}

func TestE2BStep(t *testing.T) {
	for _, tt := range []struct {
		d, want time.Duration
	}{
		{0, 5 * time.Second},
		{59 * time.Minute, 5 * time.Second},
		{time.Hour, 30 * time.Second},
		{6 * time.Hour, time.Minute},
		{12 * time.Hour, 2 * time.Minute},
		{24 * time.Hour, 5 * time.Minute},
	} {
		if got := e2bStep(tt.d); got != tt.want {
			t.Errorf("e2bStep(%s) = %s, want %s", tt.d, got, tt.want)
		}
		if tt.d > 0 && tt.d/e2bStep(tt.d) > 720 {
			t.Errorf("a range of %s has %d points", tt.d, tt.d/e2bStep(tt.d))
		}
	}
}

func TestParseSandboxIDs(t *testing.T) {
	for _, tt := range []struct {
		q  string
		n  int
		ok bool
	}{
		{"a", 1, true},
		{"a,b,c", 3, true},
		{strings.TrimSuffix(strings.Repeat("x,", 100), ","), 0, false}, // the same ID 100 times
		{"", 0, false},
		{"a,,b", 0, false},
		{"a,a", 0, false},
	} {
		ids, err := parseSandboxIDs(tt.q)
		if tt.ok != (err == nil) || tt.ok && len(ids) != tt.n {
			t.Errorf("%q: %v, %v", tt.q, ids, err)
		}
		if !tt.ok && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", tt.q, err)
		}
	}
	var many []string
	for i := range 101 {
		many = append(many, string(rune('a'+i%26))+strings.Repeat("x", i))
	}
	if _, err := parseSandboxIDs(strings.Join(many, ",")); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("101 IDs: %v", err)
	}
	if ids, err := parseSandboxIDs(strings.Join(many[:100], ",")); err != nil || len(ids) != 100 {
		t.Errorf("100 IDs: %d, %v", len(ids), err)
	}
}
