package controlplane

import (
	"errors"
	"net/url"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestMetricsWindow(t *testing.T) {
	const ts = 1_700_000_000
	for _, tt := range []struct {
		query string
		holds bool
		err   bool
	}{
		{"", true, false},
		{"start=1699999990&end=1700000010", true, false},
		{"start=1700000000&end=1700000000", true, false},
		{"start=1700000001", false, false},
		{"end=1699999999", false, false},
		{"start=1699996400&end=1699998200", false, false}, // an hour ago to half an hour ago
		{"start=0", true, false},
		{"start=-1", false, true},
		{"end=soon", false, true},
		{"start=1.5", false, true},
	} {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		win, err := parseMetricsWindow(q)
		if tt.err {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("%q: error %v, want ErrInvalid", tt.query, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.query, err)
			continue
		}
		if got := win.holds(ts); got != tt.holds {
			t.Errorf("%q holds %d = %v, want %v", tt.query, ts, got, tt.holds)
		}
	}
}
