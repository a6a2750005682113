package defaults

import (
	"maps"
	"os"
	"sync"
)

// Set is the sandbox-wide configuration a running envd serves with.
type Set struct {
	mu      sync.RWMutex // guards the fields below
	user    string
	workdir string
	envs    map[string]string
	token   string
}

// New returns a Set with the given default user (envd's own user when it
// runs on a host for development) and the environment envd started with.
func New(user string) *Set {
	return &Set{user: user, envs: environ()}
}

func environ() map[string]string {
	out := map[string]string{}
	for _, kv := range os.Environ() {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				out[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	return out
}

// Init is the body of POST /init; empty fields leave a value unchanged.
type Init struct {
	EnvVars        map[string]string `json:"envVars"`
	AccessToken    *string           `json:"accessToken"`
	DefaultUser    string            `json:"defaultUser"`
	DefaultWorkdir string            `json:"defaultWorkdir"`
}

// Apply merges an /init request into the set.
func (s *Set) Apply(in Init) {
	s.mu.Lock()
	defer s.mu.Unlock()
	maps.Copy(s.envs, in.EnvVars)
	if in.AccessToken != nil {
		s.token = *in.AccessToken
	}
	if in.DefaultUser != "" {
		s.user = in.DefaultUser
	}
	if in.DefaultWorkdir != "" {
		s.workdir = in.DefaultWorkdir
	}
}

// User is the name of the user requests run as when they name none.
func (s *Set) User() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.user
}

// Workdir is the default working directory; empty means the user's home.
func (s *Set) Workdir() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.workdir
}

// Envs returns a copy of the default environment.
func (s *Set) Envs() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.envs)
}

// Token is the access token; empty means requests need none.
func (s *Set) Token() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.token
}
