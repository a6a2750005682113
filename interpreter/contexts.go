package interpreter

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
)

// language is how the kernels of one language start (files is the
// server's directory of kernels/), and how code of it sets environment
// variables for one run and puts them back after.
type language struct {
	// program is what runs its kernels; needs, files they need beside it.
	program func(cfg Config) string
	needs   func(cfg Config) []string
	start   func(ctx context.Context, cfg Config, files, cwd string) (kernel, error)
	envSet  func(vars map[string]string) (set, reset string, err error)
}

// languages are the languages a sandbox may have a kernel for.
var languages = map[string]language{
	"python": {
		program: func(cfg Config) string { return cfg.Python },
		start: repl(func(cfg Config, files string) []string {
			return []string{cfg.Python, filepath.Join(files, pythonKernel), filepath.Join(files, pythonStartup)}
		}),
		envSet: pythonEnv,
	},
	"r": {
		program: func(cfg Config) string { return cfg.R },
		start: jupyter(func(cfg Config, files string) []string {
			return []string{cfg.R, "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"}
		}),
		envSet: rEnv,
	},
	"javascript": {
		program: func(cfg Config) string { return cfg.Node },
		needs:   debianNodeModules("acorn"),
		start: repl(func(cfg Config, files string) []string {
			return []string{cfg.Node, filepath.Join(files, "javascript.js")}
		}),
		envSet: javascriptEnv,
	},
	"typescript": {
		program: func(cfg Config) string { return cfg.Node },
		needs:   debianNodeModules("acorn", "typescript"),
		start: repl(func(cfg Config, files string) []string {
			return []string{cfg.Node, filepath.Join(files, "javascript.js"), "typescript"}
		}),
		envSet: javascriptEnv,
	},
	"bash": {
		program: func(cfg Config) string { return cfg.Bash },
		start: repl(func(cfg Config, files string) []string {
			return []string{cfg.Bash, "--norc", "--noprofile", filepath.Join(files, "bash.sh")}
		}),
		envSet: bashEnv,
	},
	"java": {
		program: func(cfg Config) string { return cfg.Java },
		needs:   func(cfg Config) []string { return []string{filepath.Join(filepath.Dir(cfg.Java), "jshell")} },
		start: repl(func(cfg Config, files string) []string {
			return []string{cfg.Java, filepath.Join(files, "JavaKernel.java")}
		}),
		envSet: javaEnv,
	},
}

// jupyter starts the Jupyter kernels argv gives; repl, the drivers.
func jupyter(argv func(cfg Config, files string) []string) func(context.Context, Config, string, string) (kernel, error) {
	return starting(startJupyter, argv)
}

func repl(argv func(cfg Config, files string) []string) func(context.Context, Config, string, string) (kernel, error) {
	return starting(startREPL, argv)
}

// starting is a language's start: start with the argv its config gives.
func starting(start func(ctx context.Context, argv []string, cwd string, env []string) (kernel, error),
	argv func(cfg Config, files string) []string) func(context.Context, Config, string, string) (kernel, error) {
	return func(ctx context.Context, cfg Config, files, cwd string) (kernel, error) {
		return start(ctx, argv(cfg, files), cwd, cfg.Env)
	}
}

// debianNodeModules are Node.js modules as Debian installs them.
func debianNodeModules(names ...string) func(Config) []string {
	return func(Config) []string {
		var paths []string
		for _, n := range names {
			paths = append(paths, filepath.Join("/usr/share/nodejs", n))
		}
		return paths
	}
}

// rEnv sets vars with Sys.setenv, remembering what they were (NA: unset).
func rEnv(vars map[string]string) (set, reset string, err error) {
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
	return set, reset, nil
}

// rString is s as an R string literal. JSON's escapes are R's, but for
// \u2028 and \u2029, which R reads alike.
func rString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// pythonKernel is the Python kernels' driver (IPython's shell over
// pipes); pythonStartup is the file every Python kernel runs at its
// start: the display formats E2B adds.
const (
	pythonKernel  = "python.py"
	pythonStartup = "startup.py"
)

// kernelFiles are the drivers and start-up files of the kernels.
//
//go:embed kernels
var kernelFiles embed.FS

// writeStartupFiles writes kernelFiles into a new directory, and returns
// it.
func writeStartupFiles() (string, error) {
	dir, err := os.MkdirTemp("", "roost-interpreter-")
	if err != nil {
		return "", err
	}
	sub, err := fs.Sub(kernelFiles, "kernels")
	if err == nil {
		err = os.CopyFS(dir, sub)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// pythonEnv sets vars in os.environ, remembering what they were. JSON's
// strings and objects of strings are Python literals.
func pythonEnv(vars map[string]string) (set, reset string, err error) {
	vb, _ := json.Marshal(vars)
	kb, _ := json.Marshal(slices.Sorted(maps.Keys(vars)))
	set = fmt.Sprintf("import os as _roost_os\n_roost_env_saved = {k: _roost_os.environ.get(k) for k in %s}\n_roost_os.environ.update(%s)\n", kb, vb)
	reset = "for _roost_k, _roost_v in _roost_env_saved.items():\n" +
		"    if _roost_v is None: _roost_os.environ.pop(_roost_k, None)\n" +
		"    else: _roost_os.environ[_roost_k] = _roost_v\n" +
		"del _roost_env_saved\n"
	return set, reset, nil
}

// javascriptEnv sets vars in process.env, remembering what they were.
// JSON's strings and objects are JavaScript's.
func javascriptEnv(vars map[string]string) (set, reset string, err error) {
	vb, _ := json.Marshal(vars)
	kb, _ := json.Marshal(slices.Sorted(maps.Keys(vars)))
	set = fmt.Sprintf("globalThis.__roost_env_saved = Object.fromEntries(%s.map((k) => [k, process.env[k]]));\nObject.assign(process.env, %s);\n", kb, vb)
	reset = "for (const [k, v] of Object.entries(globalThis.__roost_env_saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v; }\n" +
		"delete globalThis.__roost_env_saved;\n"
	return set, reset, nil
}

// bashName is what bash takes as a variable's name.
var bashName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// bashEnv exports vars, remembering what they were; a name bash cannot
// take is refused.
func bashEnv(vars map[string]string) (set, reset string, err error) {
	var s, r strings.Builder
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if !bashName.MatchString(k) {
			return "", "", fmt.Errorf("env var %q cannot be set in bash: a name is letters, digits and _, not starting with a digit", k)
		}
		fmt.Fprintf(&s, "if [ \"${%[1]s+x}\" ]; then __roost_env_%[1]s=$%[1]s; __roost_envset_%[1]s=1; fi; export %[1]s=%[2]s\n", k, bashString(vars[k]))
		fmt.Fprintf(&r, "if [ \"${__roost_envset_%[1]s-}\" ]; then export %[1]s=\"$__roost_env_%[1]s\"; else unset %[1]s; fi; unset __roost_env_%[1]s __roost_envset_%[1]s\n", k)
	}
	return s.String(), r.String(), nil
}

// bashString is s as a bash word in single quotes.
func bashString(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// javaEnv refuses: a JVM's environment is fixed when it starts.
func javaEnv(map[string]string) (set, reset string, err error) {
	return "", "", errors.New("a java context cannot take env vars for one run (a JVM's environment is fixed when it starts): give them to the sandbox at its create")
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

// installed reports whether the program that runs l's kernels is there,
// and what it needs.
func (l language) installed(cfg Config) bool {
	st, err := os.Stat(l.program(cfg))
	if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return false
	}
	if l.needs != nil {
		for _, p := range l.needs(cfg) {
			if _, err := os.Stat(p); err != nil {
				return false
			}
		}
	}
	return true
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
	mu      sync.Mutex // guards k and env
	k       kernel
	env     map[string]string // the sandbox's env vars k has
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
func (c *codeContext) kernel(ctx context.Context) (kernel, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.k != nil {
		select {
		case <-c.k.exited():
			c.k.close()
			c.k = nil
		default:
			return c.k, nil
		}
	}
	env := sandboxEnv(ctx, c.cfg.SandboxEnv)
	cfg := c.cfg
	cfg.Env = withEnv(cfg.Env, env)
	k, err := c.lang.start(ctx, cfg, c.files, c.Cwd)
	if err != nil {
		return nil, fmt.Errorf("%s kernel: %w", c.Language, err)
	}
	c.k, c.env = k, env
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
