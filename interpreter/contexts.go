package interpreter

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// language is how the kernels of one language start (files is the
// server's directory of start-up files), and how code of it sets
// environment variables for one run and puts them back after.
type language struct {
	argv   func(cfg Config, files string) []string
	envSet func(vars map[string]string) (set, reset string)
}

// languages are the languages with a kernel in the sandbox.
var languages = map[string]language{
	"python": {
		argv: func(cfg Config, files string) []string {
			return []string{cfg.Python, "-m", "ipykernel_launcher", "-f", "{connection_file}", "--InteractiveShell.colors=NoColor",
				"--IPKernelApp.exec_files=" + filepath.Join(files, pythonStartup)}
		},
		envSet: pythonEnv,
	},
}

// pythonStartup is the file every Python kernel runs at its start: the
// display formats E2B adds (startup.py).
const pythonStartup = "startup.py"

//go:embed startup.py
var pythonStartupCode []byte

// writeStartupFiles writes the kernels' start-up files into a new
// directory, and returns it.
func writeStartupFiles() (string, error) {
	dir, err := os.MkdirTemp("", "roost-interpreter-")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, pythonStartup), pythonStartupCode, 0o644); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// pythonEnv sets vars in os.environ, remembering what they were. JSON's
// strings and objects of strings are Python literals.
func pythonEnv(vars map[string]string) (set, reset string) {
	vb, _ := json.Marshal(vars)
	kb, _ := json.Marshal(slices.Sorted(maps.Keys(vars)))
	set = fmt.Sprintf("import os as _roost_os\n_roost_env_saved = {k: _roost_os.environ.get(k) for k in %s}\n_roost_os.environ.update(%s)\n", kb, vb)
	reset = "for _roost_k, _roost_v in _roost_env_saved.items():\n" +
		"    if _roost_v is None: _roost_os.environ.pop(_roost_k, None)\n" +
		"    else: _roost_os.environ[_roost_k] = _roost_v\n" +
		"del _roost_env_saved\n"
	return set, reset
}

// normalLanguage is E2B's name for a language as a client gives it.
func normalLanguage(s string) string {
	switch s = strings.ToLower(strings.TrimSpace(s)); s {
	case "":
		return "python"
	case "js":
		return "javascript"
	case "ts":
		return "typescript"
	}
	return s
}

// available lists the languages with a kernel, for error messages.
func available() string { return strings.Join(slices.Sorted(maps.Keys(languages)), ", ") }

// codeContext is one context: a kernel of its language, started in its
// working directory, started again when it dies or is restarted.
type codeContext struct {
	ID       string `json:"id"`
	Language string `json:"language"`
	Cwd      string `json:"cwd"`

	lang  language
	cfg   Config
	files string // the server's start-up files
	// running is held for the whole of a run: runs of one context are
	// serialised, as in E2B.
	running sync.Mutex
	mu      sync.Mutex // guards k
	k       *kernel
}

// newContext makes a context of language lang in cwd; its kernel starts
// at its first use. Its errors are the client's (an unknown language, a
// cwd that is no directory).
func newContext(cfg Config, files, lang, cwd string) (*codeContext, error) {
	l, ok := languages[lang]
	if !ok {
		return nil, fmt.Errorf("language %q has no kernel in this sandbox (available: %s)", lang, available())
	}
	if cwd == "" {
		cwd = cfg.Cwd
	}
	if st, err := os.Stat(cwd); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("cwd %q is not a directory in the sandbox", cwd)
	}
	return &codeContext{ID: newID(), Language: lang, Cwd: cwd, lang: l, cfg: cfg, files: files}, nil
}

// kernel returns the context's kernel, starting it if it has none.
func (c *codeContext) kernel(ctx context.Context) (*kernel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k != nil {
		select {
		case <-c.k.exited:
			c.k.close()
			c.k = nil
		default:
			return c.k, nil
		}
	}
	k, err := startKernel(ctx, c.lang.argv(c.cfg, c.files), c.Cwd, c.cfg.Env)
	if err != nil {
		return nil, fmt.Errorf("%s kernel: %w", c.Language, err)
	}
	c.k = k
	return k, nil
}

// stop ends the context's kernel, if it has one: a run in it ends with
// errKernelDied, and the next run starts a new kernel.
func (c *codeContext) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k != nil {
		c.k.close()
		c.k = nil
	}
}
