package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"roost.dev/roost/agent"
	"roost.dev/roost/controlplane"
	"roost.dev/roost/dashboard"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

// upWarmPools are roost up's warm pools unless --warm-pool says
// otherwise: creates of base are claims of a running sandbox.
var upWarmPools = map[string]int{"base": 2}

type upOptions struct {
	dataDir string
	listen  string
	runtime string
	envd    string
	domain  string
	noPrune bool
	quota   quotaFlag
	net     networkOptions
	cache   templateCacheOptions
	tls     tlsOptions
	metrics metricsOptions
	ops     operationOptions
	level   slog.LevelVar

	// volumeDir is --volume-dir: where the host's volumes are.
	volumeDir string
	warm      warmPoolOptions
}

func newUpCmd() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the whole stack in one process: control plane, proxy and a host agent",
		Long: `Run roost on this machine: the control plane (E2B-compatible REST API and
sandbox proxy) on --listen, with SQLite in the data directory, and one host
agent with the best runtime this host supports. On first start it creates an
API key, prints it once and stores it in <data-dir>/api-key (mode 0600); later
starts say where it is kept. $` + apiKeyEnv + ` sets the key instead. Ctrl-C
stops roost; sandboxes keep running and are picked up by the next start.

` + domainModeHelp + `

Plain HTTP on --listen is the default.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runUp(cmd.Context(), &o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/roost", "data directory (database, templates, sandboxes)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:3000", "API and proxy listen address")
	f.StringVar(&o.runtime, "runtime", "auto", runtimeFlagUsage)
	f.StringVar(&o.envd, "envd", "", "envd binary injected into sandboxes (default: envd beside the roost executable)")
	f.StringVar(&o.domain, "domain", "localhost", domainFlagUsage)
	o.tls.addFlags(cmd)
	o.metrics.addFlags(cmd, true)
	o.ops.addFlags(cmd)
	f.BoolVar(&o.noPrune, "no-prune", false, "skip the start-up sweep of roost leftovers that no sandbox of this host owns (set it when another agent shares this host)")
	f.TextVar(&o.level, "log-level", &o.level, "log level: debug, info, warn, error")
	f.Var(&o.quota, "team-quota", teamQuotaUsage)
	o.net.addFlags(cmd)
	o.cache.addFlags(cmd)
	o.warm.addFlags(cmd, upWarmPools)
	f.StringVar(&o.volumeDir, "volume-dir", "", "where volumes' images are kept (default DATA_DIR/volumes); may be shared storage such as NFS (docs/persistence.md)")
	return cmd
}

func runUp(ctx context.Context, o *upOptions) error {
	log := newLogger(true, &o.level)
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	serve, err := o.tls.resolve(dataDir, o.domain, o.listen, time.Now())
	if err != nil {
		return err
	}
	// One registry for the agent and the control plane, served once.
	metrics, err := o.metrics.setup(log)
	if err != nil {
		return err
	}
	// The agent shares the control plane's blobs: nothing to transfer.
	m, err := openManager(ctx, dataDir, o.runtime, o.envd, o.noPrune, &o.net, hostSetup{budget: int64(o.cache.budget), shared: true, volumeDir: o.volumeDir, warm: &o.warm}, metrics.reg, log)
	if err != nil {
		return err
	}
	defer m.Close()

	// The agent serves on a private loopback port with a fresh token; the
	// control plane reaches it like any remote agent.
	agentToken := randomHex(24)
	agentLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	agentSrv := agent.NewServer(m, agent.ServerConfig{Token: agentToken}, log.With("component", "agent-server"))

	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		wg.Wait()
	}()
	errs := make(chan error, 1)
	wg.Go(func() { errs <- agentSrv.Serve(runCtx, agentLn) })

	st, err := openStore(ctx, "", dataDir, log, store.WithRegisterer(metrics.reg))
	if err != nil {
		return err
	}
	defer st.Close()
	// The agent is in this process: the control plane calls it and
	// reaches its sandboxes directly, a hop less for every request.
	local := &controlplane.LocalAgent{HostID: localHostID, SandboxAddr: m.SandboxAddr, Service: agent.NewService(m)}
	cfg := controlplane.Config{Domain: serve.domain, PublicURL: serve.publicURL, Local: local, TeamQuota: o.quota.q,
		Blobs: content.NewBlobs(filepath.Join(dataDir, "blobs")), Interpreter: findInterpreter(log),
		Registerer: metrics.reg, Metrics: metrics.apiHandler(), MetricsToken: metrics.opts.token}
	if err := o.ops.apply(&cfg); err != nil {
		return err
	}
	cp, err := controlplane.New(cfg, st, log.With("component", "controlplane"))
	if err != nil {
		return err
	}
	defer cp.Close()
	if err := cp.AddHost(ctx, store.Host{ID: localHostID, URL: "http://" + agentLn.Addr().String()}, agentToken); err != nil {
		return err
	}
	key, adminTok, err := ensureCredentials(ctx, cp, dataDir)
	if err != nil {
		return err
	}
	stopMetrics, err := metrics.serve(log)
	if err != nil {
		return err
	}
	defer stopMetrics()

	err = serveControlPlane(ctx, cp, o.listen, serve.tls, log, errs, func() {
		printBanner(os.Stdout, serve, key)
		printOperator(os.Stdout, adminTok)
		metrics.printScrape(os.Stdout, serve.publicURL)
		wg.Go(func() { prepareBase(runCtx, os.Stdout, m) })
	})
	log.Info("roost stopped; sandboxes keep running", "sandboxes", len(m.List()))
	return err
}

// localHostID is the host roost up's own agent is added as.
const localHostID = "local"

// apiKey is the key clients use and where it is kept.
type apiKey struct {
	value string
	// created says this start made it: the only time it is printed.
	created bool
	// file is the key file it is kept in; "" when it came from
	// $ROOST_API_KEY.
	file string
}

// ensureAPIKey returns the key clients use: see ensureCredential. A new
// one belongs to a new team, "local".
func ensureAPIKey(ctx context.Context, cp *controlplane.Server, dataDir string) (apiKey, error) {
	return ensureCredential(ctx, dataDir, apiKeyFile, apiKeyEnv, "API key",
		func(ctx context.Context) (string, error) { return cp.CreateTeamWithKey(ctx, "local") },
		cp.AddLocalKey)
}

// printBanner says where roost is and how to use it. The key itself is
// printed only by the start that made it (a terminal's scrollback and
// logs collected from stdout should not hold it on every start); later
// starts say where it is kept, and the commands read it from there.
func printBanner(w io.Writer, s *serving, k apiKey) {
	url := s.publicURL
	fmt.Fprintf(w, "roost is up: %s\n\n", url)
	keyExpr := k.value
	switch {
	case k.created:
		fmt.Fprintf(w, "A new API key was made and stored in %s (mode 0600). It is shown this once:\n\n  %s\n\n", k.file, k.value)
	case k.file != "":
		fmt.Fprintf(w, "The API key is kept in %s (mode 0600).\n\n", k.file)
		keyExpr = `"$(cat ` + k.file + `)"`
	default:
		fmt.Fprintf(w, "The API key is the one in $%s.\n\n", apiKeyEnv)
		keyExpr = `"$` + apiKeyEnv + `"`
	}
	printTrust(w, s)
	if dashboard.New().Built() {
		fmt.Fprintf(w, "Open the dashboard at %s/ and sign in with the API key.\n\n", url)
	} else {
		fmt.Fprintf(w, "This binary has no dashboard: make build builds it (npm, in dashboard/web).\n\n")
	}
	if s.domainMode {
		fmt.Fprintf(w, "Use it from the E2B SDKs, with E2B_API_URL and E2B_SANDBOX_URL unset (api.%[1]s and *.%[1]s must resolve to this machine):\n\n"+
			"  export E2B_DOMAIN=%[1]s\n  export E2B_API_KEY=%[2]s\n\n", s.domain, keyExpr)
	} else {
		fmt.Fprintf(w, "Use it from the E2B SDKs:\n\n  export E2B_API_URL=%s\n  export E2B_SANDBOX_URL=%s\n  export E2B_API_KEY=%s\n\n", url, url, keyExpr)
	}
	fmt.Fprintf(w, "or from the roost CLI:\n\n  export ROOST_API_URL=%s\n", url)
	if k.file != "" {
		fmt.Fprintf(w, "  export ROOST_API_KEY=%s\n", keyExpr)
	}
	fmt.Fprintf(w, "  roost sandbox create\n\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// findInterpreter is roost-interpreter beside this executable, for the
// template code-interpreter-v1; "" (logged) when there is none.
func findInterpreter(log *slog.Logger) string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "roost-interpreter")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	log.Info("no roost-interpreter beside roost (make build makes it): the template " + controlplane.InterpreterTemplate + " is not offered")
	return ""
}
