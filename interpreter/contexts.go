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
	argv   func(cfg Config, files string) []string // argv[0] is its program
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
	"r": {
		argv: func(cfg Config, files string) []string {
			return []string{cfg.R, "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"}
		},
		envSet: rEnv,
	},
}

// rEnv sets vars with Sys.setenv, remembering what they were (NA: unset).
func rEnv(vars map[string]string) (set, reset string) {
	keys := slices.Sorted(maps.Keys(vars))
	var names, values []string
	for _, k := range keys {
		names = append(names, rString(k))
		values = append(values, rString(vars[k]))
	}
	set = fmt.Sprintf(".roost_env_saved <- Sys.getenv(c(%s), unset = NA, names = TRUE)\ndo.call(Sys.setenv, setNames(as.list(c(%s)), c(%s)))\n",
		strings.Join(names, ", "), strings.Join(values, ", "), strings.Join(names, ", "))
	reset = "for (.roost_k in names(.roost_env_saved)) if (is.na(.roost_env_saved[[.roost_k]])) Sys.unsetenv(.roost_k) else do.call(Sys.setenv, setNames(list(.roost_env_saved[[.roost_k]]), .roost_k))\n" +
		"rm(.roost_env_saved, .roost_k)\n"
	return set, reset
}

// rString is s as an R string literal. JSON's escapes are R's, but for
// \u2028 and \u2029, which R reads alike.
func rString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
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

// installed reports whether the program that runs l's kernels is there.
func (l language) installed(cfg Config) bool {
	st, err := os.Stat(l.argv(cfg, "")[0])
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// available lists the languages whose kernels are installed, for error
// messages.
func available(cfg Config) string {
	var names []string
	for name, l := range languages {
		if l.installed(cfg) {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

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
	if !ok || !l.installed(cfg) {
		return nil, fmt.Errorf("language %q has no kernel in this sandbox (available: %s)", lang, available(cfg))
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
