package main

import (
	"maps"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestWarmPoolFlags(t *testing.T) {
	for _, tc := range []struct {
		name   string
		def    map[string]int
		args   []string
		want   map[string]int
		wantMB int64
		err    string
	}{
		{name: "default", def: map[string]int{"base": 2}, want: map[string]int{"base": 2}, wantMB: 1024},
		{name: "none by default", want: map[string]int{}, wantMB: 1024},
		{name: "repeated and commas", args: []string{"--warm-pool", "base=8,code-interpreter-v1=2", "--warm-pool", "py=1"},
			want: map[string]int{"base": 8, "code-interpreter-v1": 2, "py": 1}, wantMB: 1024},
		{name: "zero turns a default off", def: map[string]int{"base": 2}, args: []string{"--warm-pool", "base=0"}, want: map[string]int{}, wantMB: 1024},
		{name: "budget", args: []string{"--warm-pool-memory", "2GiB"}, want: map[string]int{}, wantMB: 2048},
		{name: "no size", args: []string{"--warm-pool", "base"}, err: "want TEMPLATE=N"},
		{name: "no name", args: []string{"--warm-pool", "=3"}, err: "want TEMPLATE=N"},
		{name: "negative", args: []string{"--warm-pool", "base=-1"}, err: "whole number from 0 to 1000"},
		{name: "too many", args: []string{"--warm-pool", "base=1001"}, err: "whole number from 0 to 1000"},
		{name: "budget too small", args: []string{"--warm-pool-memory", "10K"}, err: "want at least 1MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o warmPoolOptions
			cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
			o.addFlags(cmd, tc.def)
			err := cmd.ParseFlags(tc.args)
			var pools map[string]int
			var mb int64
			if err == nil {
				pools, mb, err = o.config()
			}
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err = %v, want one saying %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case !maps.Equal(pools, tc.want) || mb != tc.wantMB:
				t.Errorf("pools %v, %d MiB; want %v, %d MiB", pools, mb, tc.want, tc.wantMB)
			}
		})
	}
}
