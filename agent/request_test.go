package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := newID()
		if len(id) != 20 || !validID(id) {
			t.Fatalf("newID() = %q: want 20 valid characters", id)
		}
		if seen[id] {
			t.Fatalf("newID() repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"abc":                   true,
		"i1a2b3c4d5e6f7g8h9":    true,
		"0sandbox":              true,
		"a-b":                   true,
		strings.Repeat("a", 63): true,
		strings.Repeat("a", 64): false,
		"":                      false,
		"-abc":                  false,
		"ABC":                   false,
		"a_b":                   false,
		"a/b":                   false,
		"..":                    false,
		"a.b":                   false,
		"a b":                   false,
		"é":                     false,
	} {
		if got := validID(id); got != want {
			t.Errorf("validID(%q) = %v, want %v", id, got, want)
		}
	}
}

func TestNormalize(t *testing.T) {
	host := hostLimits{CPUs: 4, MemoryMB: 8192}
	defaults := CreateRequest{
		Template: "base",
		Limits:   runtime.Limits{VCPUs: 2, MemoryMB: 512, DiskMB: 2048},
		Timeout:  300 * time.Second,
	}
	with := func(f func(*CreateRequest)) CreateRequest {
		r := defaults
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name string
		host hostLimits
		in   CreateRequest
		want CreateRequest // compared when wantErr is empty
		// wantErr is a substring of the error, which must wrap ErrInvalid.
		wantErr string
	}{
		{name: "all defaults", in: CreateRequest{}, want: defaults},
		{name: "one-cpu host", host: hostLimits{CPUs: 1, MemoryMB: 8192}, in: CreateRequest{},
			want: with(func(r *CreateRequest) { r.Limits.VCPUs = 1 })},
		{name: "explicit values kept",
			in: CreateRequest{ID: "my-box", Template: "py", Limits: runtime.Limits{VCPUs: 4, MemoryMB: 8192, DiskMB: MaxDiskMB},
				Timeout: MaxTimeout, EnvVars: map[string]string{"A": "1"}, Metadata: map[string]string{"k": "v"}, EnvdToken: "t"},
			want: CreateRequest{ID: "my-box", Template: "py", Limits: runtime.Limits{VCPUs: 4, MemoryMB: 8192, DiskMB: MaxDiskMB},
				Timeout: MaxTimeout, EnvVars: map[string]string{"A": "1"}, Metadata: map[string]string{"k": "v"}, EnvdToken: "t"}},
		{name: "minimums", in: CreateRequest{Limits: runtime.Limits{VCPUs: 1, MemoryMB: MinMemoryMB, DiskMB: MinDiskMB}, Timeout: time.Second},
			want: with(func(r *CreateRequest) {
				r.Limits = runtime.Limits{VCPUs: 1, MemoryMB: MinMemoryMB, DiskMB: MinDiskMB}
				r.Timeout = time.Second
			})},
		{name: "negative vcpus", in: CreateRequest{Limits: runtime.Limits{VCPUs: -1}}, wantErr: "vcpus -1"},
		{name: "more vcpus than the host", in: CreateRequest{Limits: runtime.Limits{VCPUs: 5}}, wantErr: "vcpus 5"},
		{name: "too little memory", in: CreateRequest{Limits: runtime.Limits{MemoryMB: 63}}, wantErr: "memory 63 MiB"},
		{name: "more memory than the host", in: CreateRequest{Limits: runtime.Limits{MemoryMB: 8193}}, wantErr: "memory 8193 MiB"},
		{name: "negative memory", in: CreateRequest{Limits: runtime.Limits{MemoryMB: -5}}, wantErr: "memory -5 MiB"},
		{name: "too little disk", in: CreateRequest{Limits: runtime.Limits{DiskMB: 255}}, wantErr: "disk 255 MiB"},
		{name: "more than a TiB of disk", in: CreateRequest{Limits: runtime.Limits{DiskMB: MaxDiskMB + 1}}, wantErr: "disk 1048577 MiB"},
		{name: "negative pids", in: CreateRequest{Limits: runtime.Limits{Pids: -1}}, wantErr: "pids"},
		{name: "negative timeout", in: CreateRequest{Timeout: -time.Second}, wantErr: "timeout -1s"},
		{name: "sub-second timeout", in: CreateRequest{Timeout: time.Millisecond}, wantErr: "timeout 1ms"},
		{name: "timeout past the maximum", in: CreateRequest{Timeout: MaxTimeout + time.Second}, wantErr: "timeout 24h0m1s"},
		{name: "bad id", in: CreateRequest{ID: "Bad/ID"}, wantErr: `sandbox id "Bad/ID"`},
		{name: "long id", in: CreateRequest{ID: strings.Repeat("a", 64)}, wantErr: "sandbox id"},
		{name: "bad template", in: CreateRequest{Template: "../etc"}, wantErr: "template name"},
		{name: "env name with =", in: CreateRequest{EnvVars: map[string]string{"A=B": "x"}}, wantErr: `env var "A=B"`},
		{name: "empty env name", in: CreateRequest{EnvVars: map[string]string{"": "x"}}, wantErr: "env var"},
		{name: "env value with NUL", in: CreateRequest{EnvVars: map[string]string{"A": "x\x00"}}, wantErr: `env var "A"`},
		{name: "huge metadata", in: CreateRequest{Metadata: map[string]string{"k": strings.Repeat("x", maxMapBytes)}}, wantErr: "metadata"},
		{name: "empty metadata key", in: CreateRequest{Metadata: map[string]string{"": "v"}}, wantErr: "metadata: empty key"},
		{name: "token with newline", in: CreateRequest{EnvdToken: "a\nb"}, wantErr: "envd access token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.host
			if h.CPUs == 0 {
				h = host
			}
			got, err := tc.in.normalize(h)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("err = %v, want ErrInvalid saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tc.want.ID || got.Template != tc.want.Template || got.Limits != tc.want.Limits ||
				got.Timeout != tc.want.Timeout || got.EnvdToken != tc.want.EnvdToken ||
				len(got.EnvVars) != len(tc.want.EnvVars) || len(got.Metadata) != len(tc.want.Metadata) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestCheckTimeout(t *testing.T) {
	for d, ok := range map[time.Duration]bool{
		0: false, -time.Second: false, time.Second: true, time.Hour: true, MaxTimeout: true, MaxTimeout + 1: false,
	} {
		if err := checkTimeout(d); (err == nil) != ok || (err != nil && !errors.Is(err, errdefs.ErrInvalid)) {
			t.Errorf("checkTimeout(%s) = %v, want ok=%v", d, err, ok)
		}
	}
}
