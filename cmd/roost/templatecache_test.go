package main

import (
	"errors"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"1024", 1024}, {"20GiB", 20 << 30}, {"20G", 20 << 30}, {"20gb", 20 << 30},
		{"500MB", 500 << 20}, {"500 MiB", 500 << 20}, {"3k", 3 << 10}, {"1T", 1 << 40}, {"7B", 7},
	} {
		got, err := parseByteSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "GiB", "-1G", "1.5G", "12XB", "99999999999T"} {
		if _, err := parseByteSize(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("parseByteSize(%q): %v, want ErrInvalid", bad, err)
		}
	}
	s := byteSize(20 << 30)
	if s.String() != "20GiB" {
		t.Errorf("String of 20 GiB: %q", s.String())
	}
	if err := s.Set("512MiB"); err != nil || s != 512<<20 || s.String() != "512MiB" {
		t.Errorf("Set 512MiB: %v %d %q", err, s, s.String())
	}
}
