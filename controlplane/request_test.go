package controlplane

import (
	"errors"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

func TestParseCreate(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		want    createParams
		invalid bool
	}{
		{name: "empty object takes defaults", body: `{}`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true}},
		{name: "sdk body", body: `{"templateID":"py","timeout":60,"metadata":{"a":"b"},"envVars":{"K":"v"},"autoPause":true,"secure":false,"allow_internet_access":false,"network":{"allowPublicTraffic":false},"mcp":null}`,
			want: createParams{Template: "py", Timeout: time.Minute, Metadata: map[string]string{"a": "b"}, EnvVars: map[string]string{"K": "v"},
				AutoPause: true}},
		{name: "resources", body: `{"cpuCount":2,"memoryMB":1024,"diskSizeMB":4096}`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true,
				VCPUs: 2, MemoryMB: 1024, DiskMB: 4096}},
		{name: "auto-resume with auto-pause", body: `{"autoPause":true,"autoResume":{"enabled":true}}`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true,
				AutoPause: true, AutoResume: true}},
		{name: "auto-resume disabled without auto-pause", body: `{"autoResume":{"enabled":false}}`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true}},
		{name: "auto-resume without auto-pause", body: `{"autoResume":{"enabled":true}}`, invalid: true},
		{name: "auto-resume with auto-pause off", body: `{"autoPause":false,"autoResume":{"enabled":true}}`, invalid: true},
		{name: "auto-resume not an object", body: `{"autoPause":true,"autoResume":true}`, invalid: true},
		{name: "zero timeout", body: `{"timeout":0}`, invalid: true},
		{name: "negative timeout", body: `{"timeout":-5}`, invalid: true},
		{name: "timeout over a day", body: `{"timeout":86401}`, invalid: true},
		{name: "fractional timeout", body: `{"timeout":1.5}`, invalid: true},
		{name: "bad template", body: `{"templateID":"../etc"}`, invalid: true},
		{name: "long template", body: `{"templateID":"` + strings.Repeat("a", 64) + `"}`, invalid: true},
		{name: "env name with =", body: `{"envVars":{"A=B":"c"}}`, invalid: true},
		{name: "env value with NUL", body: `{"envVars":{"A":"\u0000"}}`, invalid: true},
		{name: "absurd vcpus", body: `{"cpuCount":100000}`, invalid: true},
		{name: "negative memory", body: `{"memoryMB":-1}`, invalid: true},
		{name: "vcpus overflow int32", body: `{"cpuCount":9999999999999}`, invalid: true},
		{name: "not json", body: `templateID=base`, invalid: true},
		{name: "wrong type", body: `{"metadata":"x"}`, invalid: true},
		{name: "empty body takes defaults", body: ``,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true}},
		{name: "null takes defaults", body: `null`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true}},
		{name: "array", body: `[]`, invalid: true},
		{name: "defaults of settings roost lacks are accepted", body: `{"autoPauseMemory":true,"mcp":null,"iam":null,"volumeMounts":[],"network":{"allowOut":[],"denyOut":[],"rules":{},"maskRequestHost":"","egressProxy":null}}`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true}},
		{name: "allowOut", body: `{"network":{"allowOut":["8.8.8.8/32"]}}`, invalid: true},
		{name: "denyOut", body: `{"network":{"denyOut":["0.0.0.0/0"]}}`, invalid: true},
		{name: "egressProxy", body: `{"network":{"egressProxy":{"url":"http://proxy"}}}`, invalid: true},
		{name: "maskRequestHost", body: `{"network":{"maskRequestHost":"x.example"}}`, invalid: true},
		{name: "network rules", body: `{"network":{"rules":{"api.example.com":[]}}}`, invalid: true},
		{name: "filesystem-only auto-pause", body: `{"autoPause":true,"autoPauseMemory":false}`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true,
				AutoPause: true, AutoPauseFilesystem: true}},
		{name: "filesystem-only auto-pause without auto-pause", body: `{"autoPauseMemory":false}`, invalid: true},
		{name: "mcp", body: `{"mcp":{"github":{}}}`, invalid: true},
		{name: "iam", body: `{"iam":{"role":"x"}}`, invalid: true},
		{name: "volume mounts", body: `{"volumeMounts":[{"name":"v","path":"/data"},{"name":"w","path":"/mnt/w","readOnly":true}]}`,
			want: createParams{Template: "base", Timeout: 300 * time.Second, Secure: true, AllowInternet: true, PublicTraffic: true,
				Volumes: []volumeMountRequest{{Name: "v", Path: "/data"}, {Name: "w", Path: "/mnt/w", ReadOnly: true}}}},
		{name: "volume name with a slash", body: `{"volumeMounts":[{"name":"a/b","path":"/data"}]}`, invalid: true},
		{name: "volume name ..", body: `{"volumeMounts":[{"name":"..","path":"/data"}]}`, invalid: true},
		{name: "volume path relative", body: `{"volumeMounts":[{"name":"v","path":"data"}]}`, invalid: true},
		{name: "volume path root", body: `{"volumeMounts":[{"name":"v","path":"/"}]}`, invalid: true},
		{name: "volume path with ..", body: `{"volumeMounts":[{"name":"v","path":"/data/../etc"}]}`, invalid: true},
		{name: "volume path under /proc", body: `{"volumeMounts":[{"name":"v","path":"/proc/self"}]}`, invalid: true},
		{name: "volume path /sys", body: `{"volumeMounts":[{"name":"v","path":"/sys"}]}`, invalid: true},
		{name: "volume path under /dev", body: `{"volumeMounts":[{"name":"v","path":"/dev/shm"}]}`, invalid: true},
		{name: "two volumes at one path", body: `{"volumeMounts":[{"name":"v","path":"/d"},{"name":"w","path":"/d"}]}`, invalid: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCreate(strings.NewReader(tt.body))
			if tt.invalid {
				if err == nil {
					t.Fatalf("parseCreate(%s) = %+v, want an error", tt.body, got)
				}
				if !errors.Is(err, errdefs.ErrInvalid) {
					t.Fatalf("error %v is not ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got.Metadata, tt.want.Metadata) || !maps.Equal(got.EnvVars, tt.want.EnvVars) {
				t.Fatalf("maps: got %+v, want %+v", got, tt.want)
			}
			got.Metadata, got.EnvVars, tt.want.Metadata, tt.want.EnvVars = nil, nil, nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseTimeoutBody(t *testing.T) {
	tests := []struct {
		body string
		def  time.Duration
		want time.Duration
		err  bool
	}{
		{`{"timeout":30}`, 0, 30 * time.Second, false},
		{`{}`, 0, 0, true},
		{``, 0, 0, true},
		{``, time.Minute, time.Minute, false},
		{`{}`, time.Minute, time.Minute, false},
		{`{"timeout":0}`, time.Minute, 0, true},
		{`{"timeout":"30"}`, 0, 0, true},
	}
	for _, tt := range tests {
		got, err := parseTimeoutBody(strings.NewReader(tt.body), tt.def)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseTimeoutBody(%q, %s) = %s, %v; want %s, error %v", tt.body, tt.def, got, err, tt.want, tt.err)
		}
	}
}

func TestParseRefreshBody(t *testing.T) {
	tests := []struct {
		body string
		want time.Duration
		err  bool
	}{
		{`{"duration":60}`, time.Minute, false},
		{`{"duration":3600}`, time.Hour, false},
		{`{"duration":0}`, minRefresh, false},
		{`{"duration":5}`, minRefresh, false},
		{`{}`, minRefresh, false},
		{``, minRefresh, false},
		{`{"duration":3601}`, 0, true},
		{`{"duration":-1}`, 0, true},
		{`{"duration":"60"}`, 0, true},
		{`{"duration":`, 0, true},
	}
	for _, tt := range tests {
		got, err := parseRefreshBody(strings.NewReader(tt.body))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseRefreshBody(%q) = %s, %v; want %s, error %v", tt.body, got, err, tt.want, tt.err)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("parseRefreshBody(%q): %v is not invalid", tt.body, err)
		}
	}
}

func TestParseListQuery(t *testing.T) {
	both := []store.SandboxState{store.SandboxRunning, store.SandboxPaused}
	const newest = store.NewestFirst
	started := time.Date(2026, 3, 1, 12, 0, 0, 123e6, time.UTC)
	tests := []struct {
		query string
		want  listQuery
		err   bool
	}{
		{"", listQuery{States: both, Order: newest}, false},
		{"state=running", listQuery{States: []store.SandboxState{store.SandboxRunning}, Order: newest}, false},
		{"state=paused,running,paused", listQuery{States: []store.SandboxState{store.SandboxPaused, store.SandboxRunning}, Order: newest}, false},
		{"state=running&state=paused", listQuery{States: both, Order: newest}, false},
		{"state=lost", listQuery{}, true},
		{"metadata=" + url.QueryEscape("a=1&b=x y"), listQuery{States: both, Metadata: map[string]string{"a": "1", "b": "x y"}, Order: newest}, false},
		{"metadata=" + url.QueryEscape("a=1&a=2"), listQuery{}, true},
		{"limit=10&nextToken=abc", listQuery{States: both, Order: newest, Limit: 10, NextToken: "abc"}, false},
		{"limit=100", listQuery{States: both, Order: newest, Limit: 100}, false},
		{"limit=0", listQuery{}, true},
		{"limit=-1", listQuery{}, true},
		{"limit=101", listQuery{}, true},
		{"limit=ten", listQuery{}, true},
		{"order=asc", listQuery{States: both, Order: store.OldestFirst}, false},
		{"order=desc", listQuery{States: both, Order: newest}, false},
		{"order=ASC", listQuery{}, true},
		{"order=newest", listQuery{}, true},
		{"startedAfter=2026-03-01T12:00:00.123Z", listQuery{States: both, Order: newest, StartedAfter: started}, false},
		{"startedAfter=" + url.QueryEscape("2026-03-01T13:00:00.123+01:00"), listQuery{States: both, Order: newest, StartedAfter: started}, false},
		{"startedAfter=2026-03-01T12:00:00Z", listQuery{States: both, Order: newest, StartedAfter: started.Truncate(time.Second)}, false},
		{"startedAfter=2026-03-01", listQuery{}, true},
		{"startedAfter=1772366400", listQuery{}, true},
		{"startedAfter=2026-03-01T12:00:00", listQuery{}, true},
		{"template=base", listQuery{States: both, Order: newest, Template: "base"}, false},
		{"template=team%2Fmy-alias", listQuery{States: both, Order: newest, Template: "team/my-alias"}, false},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		got, err := parseListQuery(q)
		if tt.err {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("parseListQuery(%q) error = %v, want ErrInvalid", tt.query, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got.States, tt.want.States) || !maps.Equal(got.Metadata, tt.want.Metadata) ||
			got.Limit != tt.want.Limit || got.NextToken != tt.want.NextToken || got.Order != tt.want.Order ||
			!got.StartedAfter.Equal(tt.want.StartedAfter) || got.Template != tt.want.Template {
			t.Errorf("parseListQuery(%q) = %+v, %v; want %+v", tt.query, got, err, tt.want)
		}
	}
}

func TestParseMetadataQuery(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string
		err  bool
	}{
		{"", nil, false},
		{"k=v", map[string]string{"k": "v"}, false},
		{"k=v&k2=v%262", map[string]string{"k": "v", "k2": "v&2"}, false},
		{"k=", map[string]string{"k": ""}, false},
		{"=v", nil, true},
		{"k=1&k=2", nil, true},
		{"k=%zz", nil, true},
		{"a=1;b=2", nil, true},
	}
	for _, tt := range tests {
		got, err := parseMetadataQuery(tt.in)
		if (err != nil) != tt.err || !maps.Equal(got, tt.want) {
			t.Errorf("parseMetadataQuery(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

// FuzzMetadataQuery checks that the parser never panics, fails only with
// ErrInvalid, and that what it accepts round-trips through encoding.
func FuzzMetadataQuery(f *testing.F) {
	for _, s := range []string{"", "a=b", "a=b&c=d", "a=%20", "=", "&&", "a=1&a=2", "%", "a;b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		md, err := parseMetadataQuery(s)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		vals := url.Values{}
		for k, v := range md {
			if k == "" {
				t.Fatalf("empty key accepted from %q", s)
			}
			vals.Set(k, v)
		}
		again, err := parseMetadataQuery(vals.Encode())
		if err != nil || !maps.Equal(again, md) && len(md) > 0 {
			t.Fatalf("round trip of %q: %v, %v; want %v", s, again, err, md)
		}
	})
}

func TestIDsAndKeys(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newSandboxID()
		if len(id) != 16 || seen[id] {
			t.Fatalf("sandbox id %q: want 16 characters, unique", id)
		}
		for _, c := range id {
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
				t.Fatalf("sandbox id %q has %q, outside [a-z0-9]", id, c)
			}
		}
		seen[id] = true
	}
	if tok := newToken(); len(tok) != 32 {
		t.Fatalf("token %q: want 32 characters (160 bits)", tok)
	}
}

func TestParseSetTimeout(t *testing.T) {
	for _, tt := range []struct {
		body string
		want time.Duration
		ok   bool
	}{
		{`{"timeout": 0}`, 0, true},
		{`{"timeout": 90}`, 90 * time.Second, true},
		{`{"timeout": 86400}`, 24 * time.Hour, true},
		{`{"timeout": 86401}`, 0, false},
		{`{"timeout": -1}`, 0, false},
		{`{}`, 0, false},
		{``, 0, false},
		{`{"timeout": "1"}`, 0, false},
	} {
		got, err := parseSetTimeout(strings.NewReader(tt.body))
		if (err == nil) != tt.ok || got != tt.want || err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("parseSetTimeout(%q) = %s, %v; want %s, ok %v", tt.body, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseRegister(t *testing.T) {
	ok := registerRequest{RegistrationToken: "t", URL: "https://10.0.0.2:7000", CSR: "-----BEGIN CERTIFICATE REQUEST-----",
		CPUs: 4, MemoryMB: 8192, MaxSandboxes: 10}
	tests := []struct {
		name  string
		edit  func(*registerRequest)
		valid bool
	}{
		{"complete", func(*registerRequest) {}, true},
		{"https with path", func(r *registerRequest) { r.URL = "https://agent.example/roost" }, true},
		{"no registration token", func(r *registerRequest) { r.RegistrationToken = "" }, false},
		{"again", func(r *registerRequest) { r.HostID, r.Token = "hostab", "x" }, true},
		{"host without token", func(r *registerRequest) { r.HostID = "hostab" }, false},
		{"token without host", func(r *registerRequest) { r.Token = "x" }, false},
		{"plain http (an agent from before mutual TLS)", func(r *registerRequest) { r.URL = "http://10.0.0.2:7000" }, false},
		{"no csr", func(r *registerRequest) { r.CSR = "" }, false},
		{"overlong csr", func(r *registerRequest) { r.CSR = strings.Repeat("x", maxCSRLen+1) }, false},
		{"no url", func(r *registerRequest) { r.URL = "" }, false},
		{"relative url", func(r *registerRequest) { r.URL = "/agent" }, false},
		{"other scheme", func(r *registerRequest) { r.URL = "unix:///run/agent.sock" }, false},
		{"negative cpus", func(r *registerRequest) { r.CPUs = -1 }, false},
		{"negative max", func(r *registerRequest) { r.MaxSandboxes = -1 }, false},
		{"overlong token", func(r *registerRequest) { r.HostID, r.Token = "h", strings.Repeat("x", 257) }, false},
	}
	for _, tt := range tests {
		r := ok
		tt.edit(&r)
		_, err := parseRegister(r)
		if tt.valid != (err == nil) || (err != nil && !errors.Is(err, errdefs.ErrInvalid)) {
			t.Errorf("%s: parseRegister = %v, want valid %v", tt.name, err, tt.valid)
		}
	}
}

func FuzzListQuery(f *testing.F) {
	for _, s := range []string{"", "order=asc", "order=desc&limit=100", "startedAfter=2026-03-01T12:00:00.123Z",
		"startedAfter=2026-03-01T13:00:00%2B01:00", "template=base&state=running,paused", "limit=101", "order=x", "nextToken=abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := url.ParseQuery(s)
		if err != nil {
			return
		}
		lq, err := parseListQuery(q)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if lq.Order != store.NewestFirst && lq.Order != store.OldestFirst {
			t.Fatalf("%q: order %d", s, lq.Order)
		}
		if lq.Limit < 0 || lq.Limit > maxListLimit || len(lq.States) == 0 {
			t.Fatalf("%q: limit %d, states %v", s, lq.Limit, lq.States)
		}
	})
}
