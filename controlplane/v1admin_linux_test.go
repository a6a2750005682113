package controlplane_test

import (
	"bytes"
	"errors"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/tlscert"
)

// apiKeyEntry is one listed API key (E2B's TeamAPIKey).
type apiKeyEntry struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Mask struct {
		Prefix            string `json:"prefix"`
		ValueLength       int    `json:"valueLength"`
		MaskedValuePrefix string `json:"maskedValuePrefix"`
		MaskedValueSuffix string `json:"maskedValueSuffix"`
	} `json:"mask"`
	CreatedAt time.Time  `json:"createdAt"`
	LastUsed  *time.Time `json:"lastUsed"`
	Key       string     `json:"key"` // only in the create answer
}

// masks says whether the mask shows plain's first and last characters.
func (k apiKeyEntry) masks(plain string) bool {
	m := k.Mask
	return m.ValueLength == len(plain)-len(m.Prefix) && m.MaskedValuePrefix != "" &&
		strings.HasPrefix(plain, m.Prefix+m.MaskedValuePrefix) && strings.HasSuffix(plain, m.MaskedValueSuffix) && m.MaskedValueSuffix != ""
}

// bearer is the header pair that sends an access token.
func bearer(token string) []string { return []string{"Authorization", "Bearer " + token} }

type hostEntry struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	URL      string `json:"url"`
	State    string `json:"state"`
	Runtime  string `json:"runtime"`
	Capacity struct {
		CPUs         int   `json:"cpus"`
		MemoryMB     int64 `json:"memoryMB"`
		MaxSandboxes int   `json:"maxSandboxes"`
	} `json:"capacity"`
	Usage struct {
		Sandboxes int   `json:"sandboxes"`
		VCPUs     int   `json:"vcpus"`
		MemoryMB  int64 `json:"memoryMB"`
	} `json:"usage"`
	Capabilities  map[string]bool `json:"capabilities"`
	RegisteredAt  time.Time       `json:"registeredAt"`
	LastHeartbeat *time.Time      `json:"lastHeartbeat"`
	Sandboxes     int             `json:"sandboxes"`
}

type templateEntry struct {
	Name      string   `json:"name"`
	SizeBytes int64    `json:"sizeBytes"`
	Hosts     []string `json:"hosts"`
}

func (e *testenv) hosts(t *testing.T) map[string]hostEntry {
	t.Helper()
	r := e.do("GET", "/v1/hosts", e.key, nil).want(t, http.StatusOK)
	if bytes.Contains(r.body, []byte(agentToken)) || bytes.Contains(bytes.ToLower(r.body), []byte(`"token"`)) {
		t.Fatalf("host listing shows a token: %s", r.body)
	}
	var hs []hostEntry
	r.decode(t, &hs)
	out := map[string]hostEntry{}
	for _, h := range hs {
		out[h.ID] = h
	}
	return out
}

func (e *testenv) templates(t *testing.T) map[string]templateEntry {
	t.Helper()
	var ts []templateEntry
	e.do("GET", "/v1/templates", e.key, nil).want(t, http.StatusOK).decode(t, &ts)
	out := map[string]templateEntry{}
	for _, tt := range ts {
		out[tt.Name] = tt
	}
	return out
}

func (e *testenv) apiKeys(t *testing.T, key string) []apiKeyEntry {
	t.Helper()
	r := e.do("GET", "/api-keys", key, nil).want(t, http.StatusOK)
	// Only these fields, whatever the key: never a hash or the key itself.
	var raw []map[string]any
	r.decode(t, &raw)
	for _, k := range raw {
		if got := slices.Sorted(maps.Keys(k)); !slices.Equal(got, []string{"createdAt", "createdBy", "id", "lastUsed", "mask", "name"}) {
			t.Fatalf("listed key has fields %v", got)
		}
	}
	if bytes.Contains(r.body, []byte(key)) {
		t.Fatalf("key listing shows the key: %s", r.body)
	}
	var keys []apiKeyEntry
	r.decode(t, &keys)
	return keys
}

func TestV1Admin(t *testing.T) {
	e := newTestenv(t, controlplane.Config{})

	t.Run("Templates", func(t *testing.T) {
		base, ok := e.templates(t)["base"]
		if !ok || base.SizeBytes <= 0 || !slices.Equal(base.Hosts, []string{"host1"}) {
			t.Fatalf("base template %+v (listed %v)", base, ok)
		}
		e.do("GET", "/v1/templates", "", nil).want(t, http.StatusUnauthorized)
	})

	t.Run("Hosts", func(t *testing.T) {
		h, ok := e.hosts(t)["host1"]
		if !ok || h.URL != e.agentSrv.URL || h.State != "ready" || h.Runtime == "" || h.Capacity.CPUs <= 0 ||
			h.Capacity.MemoryMB <= 0 || h.RegisteredAt.IsZero() || h.LastHeartbeat != nil || h.Sandboxes != 0 {
			t.Fatalf("host1 %+v (listed %v)", h, ok)
		}
		id := e.create(t, map[string]any{"templateID": "base", "timeout": 120}).SandboxID
		if n := e.hosts(t)["host1"].Sandboxes; n != 1 {
			t.Errorf("host1 has %d sandboxes after a create, want 1", n)
		}
		e.do("DELETE", "/sandboxes/"+id, e.key, nil).want(t, http.StatusNoContent)
		if n := e.hosts(t)["host1"].Sandboxes; n != 0 {
			t.Errorf("host1 has %d sandboxes after the delete, want 0", n)
		}
		e.do("GET", "/v1/hosts", "", nil).want(t, http.StatusUnauthorized)
		// The operator reads them without acting as a team; a wrong token
		// is refused either way.
		var hosts []struct{ ID string }
		e.admin(e.adminToken(t), "GET", "/v1/hosts", "", nil).want(t, http.StatusOK).decode(t, &hosts)
		if len(hosts) != 1 || hosts[0].ID != "host1" {
			t.Errorf("the operator's hosts: %+v", hosts)
		}
		e.admin("roost_admin_0000000000000000000000000000000000000000", "GET", "/v1/hosts", "", nil).want(t, http.StatusUnauthorized)
	})

	// Registered last: the hosts added here would take new sandboxes.
	t.Run("RegisteredHosts", func(t *testing.T) {
		// A second host served by the same agent over mutual TLS, and one
		// nobody serves (an agent that reports no capabilities).
		secondReg := e.registerTLSHost(t, map[string]any{"name": "second", "runtime": "namespace", "cpus": 2,
			"memoryMB": 1024, "maxSandboxes": 3, "capabilities": map[string]bool{"pause": true}})
		second := secondReg.HostID
		goneTok, err := e.cp.CreateRegistrationToken(t.Context(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		_, csr, err := tlscert.NewAgentKey()
		if err != nil {
			t.Fatal(err)
		}
		var goneReg struct{ HostID string }
		e.do("POST", "/v1/hosts/register", "", map[string]any{"registrationToken": goneTok, "name": "gone", "url": "https://127.0.0.1:1",
			"csr": string(csr), "runtime": "namespace", "cpus": 2, "memoryMB": 1024, "maxSandboxes": 3,
		}).want(t, http.StatusCreated).decode(t, &goneReg)
		gone := goneReg.HostID
		e.do("POST", "/v1/hosts/"+second+"/heartbeat", "", map[string]any{"sandboxes": 1, "vcpus": 2, "memoryMB": 512},
			"Authorization", "Bearer "+secondReg.Token).want(t, http.StatusNoContent)
		e.do("POST", "/v1/hosts/"+second+"/heartbeat", "", map[string]any{"sandboxes": 1},
			"Authorization", "Bearer "+agentToken).want(t, http.StatusUnauthorized)

		hs := e.hosts(t)
		h := hs[second]
		if h.Name != "second" || h.State != "ready" || h.Capacity.MaxSandboxes != 3 || h.LastHeartbeat == nil ||
			h.Usage.Sandboxes != 1 || h.Usage.VCPUs != 2 || h.Usage.MemoryMB != 512 ||
			!maps.Equal(h.Capabilities, map[string]bool{"pause": true, "snapshot": false, "fork": false, "vm": false}) {
			t.Errorf("second host %+v", h)
		}
		if c := hs[gone].Capabilities; c != nil {
			t.Errorf("a host registered without capabilities has %v", c)
		}
		if _, ok := hs[gone]; !ok || len(hs) != 3 {
			t.Errorf("hosts %v: want host1, %s and %s", slices.Sorted(maps.Keys(hs)), second, gone)
		}
		// The unreachable host is left out, not an error.
		want := []string{"host1", second}
		slices.Sort(want)
		if base := e.templates(t)["base"]; !slices.Equal(base.Hosts, want) {
			t.Errorf("base is on %v, want %v", base.Hosts, want)
		}
	})

	t.Run("APIKeys", func(t *testing.T) {
		keys := e.apiKeys(t, e.key)
		if len(keys) != 1 || keys[0].Name != "default" || !keys[0].masks(e.key) || keys[0].Mask.Prefix != "e2b_" || keys[0].CreatedAt.IsZero() {
			t.Fatalf("keys %+v", keys)
		}
		first := keys[0]

		var made apiKeyEntry
		e.do("POST", "/api-keys", e.key, map[string]any{"name": "ci runner"}).want(t, http.StatusCreated).decode(t, &made)
		if !regexp.MustCompile(`^e2b_[0-9a-f]{40}$`).MatchString(made.Key) || made.ID == "" || made.ID == first.ID ||
			made.Name != "ci runner" || !made.masks(made.Key) || made.CreatedAt.IsZero() || made.LastUsed != nil {
			t.Fatalf("created key %+v", made)
		}

		// Both are listed, oldest first, the new key without its plaintext;
		// the key that listed them is marked used.
		keys = e.apiKeys(t, made.Key)
		if len(keys) != 2 || keys[0].ID != first.ID || keys[1].ID != made.ID || keys[1].Key != "" ||
			keys[1].LastUsed == nil || keys[1].LastUsed.Before(made.CreatedAt.Add(-time.Second)) {
			t.Fatalf("keys %+v", keys)
		}
		e.do("PATCH", "/api-keys/"+made.ID, e.key, map[string]any{"name": "renamed"}).want(t, http.StatusOK)
		if keys = e.apiKeys(t, e.key); keys[1].Name != "renamed" {
			t.Fatalf("renamed key is listed as %q", keys[1].Name)
		}
		// The new key works for everything, and may delete itself.
		e.do("GET", "/v2/sandboxes", made.Key, nil).want(t, http.StatusOK)
		e.do("DELETE", "/api-keys/"+made.ID, made.Key, nil).want(t, http.StatusNoContent)
		e.do("GET", "/api-keys", made.Key, nil).want(t, http.StatusUnauthorized)
		e.do("DELETE", "/api-keys/"+made.ID, e.key, nil).want(t, http.StatusNotFound)
		e.do("PATCH", "/api-keys/"+made.ID, e.key, map[string]any{"name": "x"}).want(t, http.StatusNotFound)
		if keys = e.apiKeys(t, e.key); len(keys) != 1 || keys[0].ID != first.ID {
			t.Fatalf("keys after the delete %+v", keys)
		}

		// A key made by one key and deleted by another.
		var second apiKeyEntry
		e.do("POST", "/api-keys", e.key, map[string]any{"name": "ünïcode ✓"}).want(t, http.StatusCreated).decode(t, &second)
		e.do("DELETE", "/api-keys/"+second.ID, e.key, nil).want(t, http.StatusNoContent)
		e.do("GET", "/v2/sandboxes", second.Key, nil).want(t, http.StatusUnauthorized)
	})

	t.Run("AccessTokens", func(t *testing.T) {
		var tok struct {
			ID, Name, Token string
			Mask            struct{ Prefix string }
		}
		e.do("POST", "/access-tokens", e.key, map[string]any{"name": "laptop"}).want(t, http.StatusCreated).decode(t, &tok)
		if !regexp.MustCompile(`^sk_e2b_[0-9a-f]{40}$`).MatchString(tok.Token) || tok.Name != "laptop" || tok.Mask.Prefix != "sk_e2b_" {
			t.Fatalf("created token %+v", tok)
		}
		// A token is accepted wherever a key is, as a Bearer, for its team;
		// never as a key, and no key as a Bearer.
		e.do("GET", "/v2/sandboxes", "", nil, bearer(tok.Token)...).want(t, http.StatusOK)
		e.do("GET", "/api-keys", "", nil, bearer(tok.Token)...).want(t, http.StatusOK)
		e.do("GET", "/v2/sandboxes", "", nil, append(bearer(tok.Token), "X-Team-ID", "team_other")...).want(t, http.StatusForbidden)
		e.do("GET", "/v2/sandboxes", tok.Token, nil).want(t, http.StatusUnauthorized)
		e.do("GET", "/v2/sandboxes", "", nil, bearer(e.key)...).want(t, http.StatusUnauthorized)
		var teams []struct {
			TeamID, Name, APIKey string
			IsDefault            bool
		}
		e.do("GET", "/teams", "", nil, bearer(tok.Token)...).want(t, http.StatusOK).decode(t, &teams)
		if len(teams) != 1 || teams[0].TeamID == "" || teams[0].APIKey != "" || !teams[0].IsDefault {
			t.Fatalf("teams for a token %+v", teams)
		}
		e.do("GET", "/teams", e.key, nil).want(t, http.StatusOK).decode(t, &teams)
		if len(teams) != 1 || teams[0].APIKey != e.key {
			t.Fatalf("teams for a key %+v", teams)
		}
		// Tokens are not keys: neither listed nor deleted as keys.
		for _, k := range e.apiKeys(t, e.key) {
			if k.ID == tok.ID {
				t.Fatalf("access token %s is listed as a key", tok.ID)
			}
		}
		e.do("DELETE", "/api-keys/"+tok.ID, e.key, nil).want(t, http.StatusNotFound)
		e.do("DELETE", "/access-tokens/"+tok.ID, "", nil, bearer(tok.Token)...).want(t, http.StatusNoContent)
		e.do("GET", "/v2/sandboxes", "", nil, bearer(tok.Token)...).want(t, http.StatusUnauthorized)
		e.do("DELETE", "/access-tokens/"+tok.ID, e.key, nil).want(t, http.StatusNotFound)
	})

	t.Run("LocalKey", func(t *testing.T) {
		// roost up and roost server add an operator's key to the local team.
		e2bKey := "e2b_" + strings.Repeat("ab01", 10)
		for _, k := range []string{e2bKey, "roost_local_0123456789abcdef"} {
			for range 2 { // the second time it is known already
				if err := e.cp.AddLocalKey(t.Context(), k); err != nil {
					t.Fatalf("add %q: %v", k, err)
				}
			}
			e.do("GET", "/v2/sandboxes", k, nil).want(t, http.StatusOK)
		}
		if keys := e.apiKeys(t, e2bKey); len(keys) != 2 || !keys[0].masks(e2bKey) {
			t.Fatalf("local team's keys %+v", keys)
		}
		for _, bad := range []string{"secret", "e2b_XYZ", "roost_short"} {
			if err := e.cp.AddLocalKey(t.Context(), bad); !errors.Is(err, errdefs.ErrUnauthenticated) {
				t.Errorf("add %q: %v, want errdefs.ErrUnauthenticated", bad, err)
			}
		}
	})

	t.Run("OtherTeam", func(t *testing.T) {
		other, err := e.cp.CreateTeamWithKey(t.Context(), "other")
		if err != nil {
			t.Fatal(err)
		}
		theirs := e.apiKeys(t, other)
		if len(theirs) != 1 {
			t.Fatalf("other team's keys %+v", theirs)
		}
		for _, k := range e.apiKeys(t, e.key) {
			if k.ID == theirs[0].ID {
				t.Fatalf("another team's key %s is listed", k.ID)
			}
		}
		e.do("DELETE", "/api-keys/"+theirs[0].ID, e.key, nil).want(t, http.StatusNotFound)
		e.do("PATCH", "/api-keys/"+theirs[0].ID, e.key, map[string]any{"name": "mine"}).want(t, http.StatusNotFound)
		e.do("GET", "/api-keys", other, nil).want(t, http.StatusOK) // still works
	})

	t.Run("BadInput", func(t *testing.T) {
		for _, tc := range []struct {
			name, body string
		}{
			{"malformed", `{"name": `},
			{"not an object", `["x"]`},
			{"wrong type", `{"name": 3}`},
			{"empty body", ``},
			{"no name", `{}`},
			{"empty name", `{"name": ""}`},
			{"long name", `{"name": "` + strings.Repeat("n", 129) + `"}`},
			{"control character", `{"name": "a\u0000b"}`},
			{"newline", `{"name": "a\nb"}`},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, path := range []string{"/api-keys", "/access-tokens"} {
					e.raw(t, "POST", path, e.key, strings.NewReader(tc.body)).want(t, http.StatusBadRequest)
				}
			})
		}
		for _, bad := range []string{"", "roost_wrong", "e2b_" + strings.Repeat("0", 40), "e2b_short", "E2B_" + strings.Repeat("0", 40)} {
			e.do("POST", "/api-keys", bad, map[string]any{"name": "x"}).want(t, http.StatusUnauthorized)
		}
		e.do("GET", "/teams", "", nil, bearer("sk_e2b_nothex")...).want(t, http.StatusUnauthorized)
		e.do("DELETE", "/api-keys/key_nosuchkey", e.key, nil).want(t, http.StatusNotFound)
		e.do("DELETE", "/api-keys/"+strings.Repeat("%2F", 100), e.key, nil).want(t, http.StatusNotFound)
		// Other methods fall through to the catch-all: 404 with E2B's body.
		e.do("DELETE", "/api-keys", e.key, nil).want(t, http.StatusNotFound)
		e.do("PUT", "/v1/templates", e.key, nil).want(t, http.StatusNotFound)
		if keys := e.apiKeys(t, e.key); len(keys) != 1 {
			t.Fatalf("refused requests made keys: %+v", keys)
		}
	})

	t.Run("OpenAPI", func(t *testing.T) {
		r := e.do("GET", "/openapi.yaml", "", nil).want(t, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != "application/yaml" {
			t.Errorf("content type %q", ct)
		}
		if !bytes.HasPrefix(r.body, []byte("openapi: 3.0.")) || !bytes.Contains(r.body, []byte("\n  /api-keys:\n")) {
			t.Errorf("served document starts %q", r.body[:min(len(r.body), 40)])
		}
	})
}

// roost up's own agent sends no heartbeats; the reconciler's listing
// records its usage instead.
func TestLocalHostUsage(t *testing.T) {
	e := newTestenv(t, controlplane.Config{Local: localAgent(), ReconcileInterval: 100 * time.Millisecond})
	var c struct {
		SandboxID string `json:"sandboxID"`
	}
	e.do("POST", "/v2/sandboxes", e.key, map[string]any{"templateID": "base"}).want(t, http.StatusCreated).decode(t, &c)
	defer e.do("DELETE", "/sandboxes/"+c.SandboxID, e.key, nil)
	var h hostEntry
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if h = e.hosts(t)["host1"]; h.Usage.Sandboxes == 1 && h.LastHeartbeat != nil {
			break
		}
	}
	if h.Usage.Sandboxes != 1 || h.Usage.VCPUs < 1 || h.Usage.MemoryMB < 1 || h.LastHeartbeat == nil {
		t.Errorf("local host in /v1/hosts: usage %+v, last heartbeat %v; want the sandbox counted", h.Usage, h.LastHeartbeat)
	}
}
