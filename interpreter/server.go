package interpreter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Config configures a Server. Zero values take the defaults noted.
type Config struct {
	// Python runs Python kernels (IPython's shell, from ipykernel); default
	// /usr/bin/python3.
	Python string
	// R runs R kernels (IRkernel); default /usr/bin/R. Without it, R
	// contexts are refused.
	R string
	// Node runs JavaScript and TypeScript kernels, with Debian's acorn
	// (and typescript) modules; default /usr/bin/node.
	Node string
	// Bash runs bash kernels; default /bin/bash.
	Bash string
	// Java runs Java kernels (JShell; a JDK's jshell beside it); default
	// /usr/bin/java.
	Java string
	// SandboxEnv is where the sandbox's env vars are read (envd's GET
	// /envs, served without a token to the sandbox itself); "" for none.
	SandboxEnv string
	// Cwd is a context's working directory when it names none; default
	// /home/user.
	Cwd string
	// Env is the kernels' environment; default the server's.
	Env []string
}

// Server serves @e2b/code-interpreter's routes.
type Server struct {
	cfg   Config
	log   *slog.Logger
	files string // the kernels' start-up files

	mu       sync.Mutex
	contexts []*codeContext          // in the order they were made
	defaults map[string]*codeContext // by language
	// started is Start's outcome: nil before it ends, then a pointer to
	// its error (a pointer to nil once the default kernel answers).
	started atomic.Pointer[error]
}

// New returns a Server; Start starts its default context's kernel.
// Serve its Handler before Start returns: clients then wait for the
// kernel rather than being refused.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.R == "" {
		cfg.R = "/usr/bin/R"
	}
	if cfg.Node == "" {
		cfg.Node = "/usr/bin/node"
	}
	if cfg.Bash == "" {
		cfg.Bash = "/bin/bash"
	}
	if cfg.Java == "" {
		cfg.Java = "/usr/bin/java"
	}
	if cfg.Cwd == "" {
		cfg.Cwd = "/home/user"
	}
	if cfg.Env == nil {
		cfg.Env = os.Environ()
	}
	files, err := writeStartupFiles()
	if err != nil {
		return nil, fmt.Errorf("kernels' start-up files: %w", err)
	}
	return &Server{cfg: cfg, log: log, files: files, defaults: map[string]*codeContext{}}, nil
}

// Start makes the default Python context and starts its kernel, so that
// the first run finds it warm; /health answers 200 once it has.
func (s *Server) Start(ctx context.Context) error {
	c, err := s.defaultContext("python")
	if err == nil {
		_, err = c.kernel(ctx)
	}
	s.started.Store(&err)
	return err
}

// health is GET /health: 200 once Start has started the default kernel
// (a template's ready check waits for it), 503 before, 500 if it failed.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	switch err := s.started.Load(); {
	case err == nil:
		http.Error(w, "starting the default python kernel", http.StatusServiceUnavailable)
	case *err != nil:
		http.Error(w, (*err).Error(), http.StatusInternalServerError)
	default:
		writeJSON(w, http.StatusOK, "OK")
	}
}

// Close ends every kernel.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.contexts {
		c.stop()
	}
	os.RemoveAll(s.files)
}

// Handler serves the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("POST /execute", s.execute)
	mux.HandleFunc("POST /contexts", s.createContext)
	mux.HandleFunc("GET /contexts", s.listContexts)
	mux.HandleFunc("DELETE /contexts/{id}", s.deleteContext)
	mux.HandleFunc("POST /contexts/{id}/restart", s.restartContext)
	return mux
}

// defaultContext is language's default context, made at its first use.
func (s *Server) defaultContext(lang string) (*codeContext, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.defaults[lang]; c != nil {
		return c, nil
	}
	c, err := newContext(s.cfg, s.files, lang, "")
	if err != nil {
		return nil, err
	}
	s.defaults[lang] = c
	s.contexts = append(s.contexts, c)
	return c, nil
}

// context is the context id, or nil.
func (s *Server) context(id string) *codeContext {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.contexts {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// notFound answers 404 for the context id, in E2B's words (the package
// shows the body as the error's message).
func notFound(w http.ResponseWriter, id string) {
	http.Error(w, "Context "+id+" not found", http.StatusNotFound)
}

// executeRequest is POST /execute's body.
type executeRequest struct {
	Code      *string           `json:"code"`
	ContextID string            `json:"context_id"`
	Language  *string           `json:"language"`
	EnvVars   map[string]string `json:"env_vars"`
}

// execute is POST /execute: the run's output, a JSON object a line, as
// it happens. Headers go out at once: the package times out a request
// whose headers are late.
func (s *Server) execute(w http.ResponseWriter, r *http.Request) {
	var req executeRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&req); err != nil || req.Code == nil {
		http.Error(w, "a JSON body with the code to run (\"code\") is required", http.StatusBadRequest)
		return
	}
	if req.ContextID != "" && req.Language != nil {
		http.Error(w, "Only one of context_id or language can be provided", http.StatusBadRequest)
		return
	}
	var c *codeContext
	var err error
	if req.ContextID != "" {
		if c = s.context(req.ContextID); c == nil {
			notFound(w, req.ContextID)
			return
		}
	} else if c, err = s.defaultContext(normalLanguage(deref(req.Language))); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var env *runEnv
	if len(req.EnvVars) > 0 {
		env = &runEnv{}
		if env.set, env.reset, err = c.lang.envSet(req.EnvVars); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	c.running.Lock()
	defer c.running.Unlock()
	k, err := c.kernel(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	emit := lineWriter(w)
	emit(nil)
	s.runIn(r.Context(), c, k, *req.Code, env, emit)
	emit(event{"type": "end_of_execution"})
}

// runEnv is the code that sets a run's env vars, and puts them back.
type runEnv struct{ set, reset string }

// runIn runs code in c's kernel k, with the sandbox's env vars as envd
// has them and env set for this run (when not nil), emitting its output, and a kernel that died or would not stop as
// an error line (the context starts a new kernel at its next run).
func (s *Server) runIn(ctx context.Context, c *codeContext, k kernel, code string, env *runEnv, emit func(event)) {
	err := c.syncEnv(ctx, k)
	if err == nil && env != nil {
		if err = run(ctx, k, env.set, true, nil); err == nil {
			defer func() { _ = run(context.WithoutCancel(ctx), k, env.reset, true, nil) }()
		}
	}
	if err == nil {
		err = run(ctx, k, code, false, emit)
	}
	switch {
	case errors.Is(err, errKernelDied):
		emit(event{"type": "error", "name": "KernelDied", "value": "the " + c.Language + " kernel died; the context starts a new one at its next run (its state is lost)", "traceback": ""})
		c.stop()
	case errors.Is(err, errStuck):
		emit(event{"type": "error", "name": "ExecutionInterrupted", "value": "the run did not stop when interrupted: the kernel was restarted (its state is lost)", "traceback": ""})
		c.stop()
	case err != nil:
		emit(event{"type": "error", "name": "ExecutionFailed", "value": err.Error(), "traceback": ""})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// lineWriter returns emit, which writes an event as a line of ASCII JSON
// and flushes it (nil flushes only): the package decodes each chunk it
// reads on its own, so a character split across two would be mangled.
// Write errors are dropped: the request's context ends with the client.
func lineWriter(w http.ResponseWriter) func(event) {
	flusher, _ := w.(http.Flusher)
	return func(e event) {
		if e != nil {
			b, err := json.Marshal(e)
			if err != nil {
				return
			}
			_, _ = w.Write(append(asciiJSON(b), '\n'))
		}
		if flusher != nil {
			flusher.Flush()
		}
	}
}

// asciiJSON escapes every non-ASCII character of the JSON b as \uXXXX (a
// surrogate pair beyond the BMP).
func asciiJSON(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		switch {
		case r < utf8.RuneSelf:
			out = append(out, b[0])
		case r > 0xFFFF:
			r -= 0x10000
			out = fmt.Appendf(out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		b = b[n:]
	}
	return out
}

// contextRequest is POST /contexts' body.
type contextRequest struct {
	Language string `json:"language"`
	Cwd      string `json:"cwd"`
}

// createContext is POST /contexts: a context with its kernel started.
func (s *Server) createContext(w http.ResponseWriter, r *http.Request) {
	var req contextRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		http.Error(w, "a JSON body: "+err.Error(), http.StatusBadRequest)
		return
	}
	c, err := newContext(s.cfg, s.files, normalLanguage(req.Language), req.Cwd)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if _, err := c.kernel(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	s.mu.Lock()
	s.contexts = append(s.contexts, c)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, c)
}

// listContexts is GET /contexts, oldest first.
func (s *Server) listContexts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	list := slices.Clone(s.contexts)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, list)
}

// deleteContext is DELETE /contexts/{id}: its kernel ends.
func (s *Server) deleteContext(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	i := slices.IndexFunc(s.contexts, func(c *codeContext) bool { return c.ID == id })
	var c *codeContext
	if i >= 0 {
		c = s.contexts[i]
		s.contexts = slices.Delete(s.contexts, i, i+1)
		if s.defaults[c.Language] == c {
			delete(s.defaults, c.Language)
		}
	}
	s.mu.Unlock()
	if c == nil {
		notFound(w, id)
		return
	}
	c.stop()
	writeJSON(w, http.StatusOK, nil)
}

// restartContext is POST /contexts/{id}/restart: a new kernel, its state
// gone; a run in the old one ends with an error.
func (s *Server) restartContext(w http.ResponseWriter, r *http.Request) {
	c := s.context(r.PathValue("id"))
	if c == nil {
		notFound(w, r.PathValue("id"))
		return
	}
	c.stop()
	if _, err := c.kernel(r.Context()); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, http.StatusOK, nil)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
