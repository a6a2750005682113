package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/spf13/cobra"

	"roost.dev/roost/agent"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/template"
)

// tokenEnv supplies the agent token when --token is not given.
const tokenEnv = "ROOST_AGENT_TOKEN"

type agentOptions struct {
	dataDir string
	listen  string
	runtime string
	envd    string
	token   string
	noPrune bool
	level   slog.LevelVar
}

func newAgentCmd() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: the sandboxes of this host, over Connect RPC and /proxy",
		Long: `Run the host agent. It serves the roost.hostagent.v1.HostAgent Connect
service and /proxy/{id}/{port}/... on --listen. Sandboxes outlive the agent:
stopping it (SIGINT, SIGTERM, or kill -9) leaves them running, and the next
agent on the same --data-dir re-adopts them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runAgent(cmd.Context(), &o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/roost", "data directory (templates, sandboxes, runtime state)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:7070", "listen address; a non-loopback address requires a token")
	f.StringVar(&o.runtime, "runtime", "auto", "runtime driver: namespace, or auto (the best this host supports)")
	f.StringVar(&o.envd, "envd", "", "envd binary injected into sandboxes (default: envd beside the roost executable, else on $PATH)")
	f.StringVar(&o.token, "token", "", "require 'Authorization: Bearer TOKEN' on RPC and /proxy (default $"+tokenEnv+")")
	f.BoolVar(&o.noPrune, "no-prune", false, "skip the start-up sweep of roost network namespaces, links, mounts and cgroups that no sandbox of this agent owns (set it when another agent shares this host)")
	f.TextVar(&o.level, "log-level", &o.level, "log level: debug, info, warn, error")
	return cmd
}

func runAgent(ctx context.Context, o *agentOptions) error {
	log := newLogger(true, &o.level)
	if o.token == "" {
		o.token = os.Getenv(tokenEnv)
	}
	if o.token == "" && !isLoopback(o.listen) {
		return fmt.Errorf("--listen %s is not a loopback address: set --token (or $%s) so only the control plane can use the agent", o.listen, tokenEnv)
	}
	m, err := openManager(ctx, o.dataDir, o.runtime, o.envd, o.noPrune, log)
	if err != nil {
		return err
	}
	defer m.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	err = agent.NewServer(m, agent.ServerConfig{Token: o.token}, log.With("component", "server")).Serve(ctx, ln)
	log.Info("agent stopped; sandboxes keep running", "sandboxes", len(m.List()))
	return err
}

// openManager builds the host's sandbox manager: the runtime driver, the
// network, the template store, and the sandboxes recovered from dataDir.
// `roost agent` serves it over RPC; `roost up` also drives it in-process.
func openManager(ctx context.Context, dataDir, runtimeName, envdFlag string, noPrune bool, log *slog.Logger) (*agent.Manager, error) {
	envd, err := findEnvd(envdFlag)
	if err != nil {
		return nil, err
	}
	dataDir, err = filepath.Abs(dataDir)
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	rt, err := newRuntime(ctx, runtimeName, dataDir, log)
	if err != nil {
		return nil, err
	}
	nw, err := network.New(network.Config{}, log.With("component", "network"))
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	templates := template.NewStore(filepath.Join(dataDir, "templates"), log)
	return agent.New(ctx, agent.Config{
		DataDir: dataDir, Envd: envd, Version: buildVersion(), SkipPrune: noPrune,
	}, rt, nw, templates, log.With("component", "manager"))
}

// newRuntime constructs the runtime driver named by --runtime and checks
// that this host can run it.
func newRuntime(ctx context.Context, name, dataDir string, log *slog.Logger) (runtime.Runtime, error) {
	var rt runtime.Runtime
	switch name {
	case "auto", "namespace":
		d, err := namespace.New(namespace.Config{DataDir: filepath.Join(dataDir, "runtime", "namespace")}, log.With("component", "namespace"))
		if err != nil {
			return nil, err
		}
		rt = d
	default:
		return nil, fmt.Errorf("--runtime %q: want namespace or auto", name)
	}
	if a := rt.Probe(ctx); !a.Available {
		return nil, fmt.Errorf("%s runtime unavailable on this host: %s", rt.Name(), a.Reason)
	}
	return rt, nil
}

// findEnvd resolves --envd: the flag, else envd beside this executable,
// else envd on $PATH.
func findEnvd(flag string) (string, error) {
	if flag != "" {
		if st, err := os.Stat(flag); err != nil || st.IsDir() {
			return "", fmt.Errorf("--envd %s: not a file", flag)
		}
		return filepath.Abs(flag)
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "envd")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("envd")
	if err != nil {
		return "", errors.New("no envd binary beside roost or on $PATH: build it (make build) or pass --envd")
	}
	return filepath.Abs(p)
}

// isLoopback reports whether a listen address only accepts local clients.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
