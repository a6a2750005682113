package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
	"roost.dev/roost/template/content"
)

type serverOptions struct {
	dataDir     string
	databaseURL string
	listen      string
	publicURL   string
	domain      string
	reconcile   time.Duration
	downAfter   int
	createGrace time.Duration
	tokenTTL    time.Duration
	teamQuota   quotaFlag
	tls         tlsOptions
	metrics     metricsOptions
	ops         operationOptions
	level       slog.LevelVar
}

func newServerCmd() *cobra.Command {
	var o serverOptions
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: the REST API and sandbox proxy for the hosts that register",
		Long: `Run the control plane alone: the E2B-compatible REST API and the sandbox
proxy on --listen, its state in --database-url (SQLite in the data directory
by default, or postgres://...). Host agents join it with a one-time
registration token ('roost server token'):

  roost agent --server http://THIS:3000 --registration-token TOKEN --advertise https://AGENT:7070

The agent link is mutual TLS with certificates from the cluster CA this
control plane keeps in its database; the token pins that CA.

On first start it creates an API key, prints it once and stores it in
<data-dir>/api-key (mode 0600); $` + apiKeyEnv + ` sets the key instead.
It also makes an operator token, printed once and kept in
<data-dir>/admin-token ($` + adminTokenEnv + ` sets it instead): 'roost team' makes teams
and sets their quotas with it. --team-quota sets every team's default
limits. Ctrl-C stops it; the
sandboxes run on the hosts and keep running.

Replicas: any number of 'roost server' processes may share one PostgreSQL
database (and --data-dir, on shared storage, for template blobs). Each
serves the whole API and proxy; one of them, elected through the database,
runs timeouts, reconciling and webhook delivery, and another takes over
within seconds when it dies. Agents take all their URLs in --server
(docs/cluster.md).

` + domainModeHelp + ` Several replicas share one
certificate with --tls-cert/--tls-key (or copy <data-dir>/tls/{domain}/).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runServer(cmd.Context(), &o) },
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.dataDir, "data-dir", "/var/lib/roost", "data directory (SQLite database, API key, template blobs: replicas share it)")
	pf.StringVar(&o.databaseURL, "database-url", "", "database: sqlite:///path or postgres://... (default SQLite in <data-dir>/db/roost.db)")
	pf.TextVar(&o.level, "log-level", &o.level, "log level: debug, info, warn, error")
	pf.Var(&o.teamQuota, "team-quota", teamQuotaUsage)
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:3000", "API and proxy listen address")
	f.StringVar(&o.publicURL, "public-url", "", "URL clients reach the API at (default http://<--listen>, or with TLS https://api.{domain}[:port])")
	f.StringVar(&o.domain, "domain", "localhost", domainFlagUsage)
	o.tls.addFlags(cmd)
	o.metrics.addFlags(cmd, true)
	o.ops.addFlags(cmd)
	f.DurationVar(&o.reconcile, "reconcile-interval", 10*time.Second, "how often every host's sandboxes are checked against the database")
	f.IntVar(&o.downAfter, "down-after", 3, "unanswered reconcile rounds after which a host is down and its sandboxes lost")
	f.DurationVar(&o.createGrace, "create-grace", 11*time.Minute,
		"how long a create may take: older starting records are settled, and a sandbox a host runs with no live record is destroyed once seen this long")

	token := &cobra.Command{
		Use:   "token",
		Short: "Create a one-time registration token for a host agent and print it",
		Long: `Create a one-time registration token in the control plane's database and
print it. An agent presents it once, on its first start:
roost agent --server URL --registration-token TOKEN.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServerToken(cmd.Context(), &o, cmd.OutOrStdout())
		},
	}
	token.Flags().DurationVar(&o.tokenTTL, "ttl", time.Hour, "how long the token can be used")
	cmd.AddCommand(token)
	return cmd
}

func runServer(ctx context.Context, o *serverOptions) error {
	log := newLogger(true, &o.level)
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	serve, err := o.tls.resolve(dataDir, o.domain, o.listen, time.Now())
	if err != nil {
		return err
	}
	if o.publicURL != "" {
		serve.publicURL = o.publicURL
	}
	publicURL := serve.publicURL
	metrics, err := o.metrics.setup(log)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, o.databaseURL, dataDir, log, store.WithRegisterer(metrics.reg))
	if err != nil {
		return err
	}
	defer st.Close()
	cfg := controlplane.Config{
		Domain: serve.domain, PublicURL: publicURL, ReconcileInterval: o.reconcile, DownAfter: o.downAfter,
		CreateGrace: o.createGrace, TeamQuota: o.teamQuota.q, Blobs: content.NewBlobs(filepath.Join(dataDir, "blobs")),
		Interpreter: findInterpreter(log),
		Registerer:  metrics.reg, Metrics: metrics.apiHandler(), MetricsToken: metrics.opts.token,
	}
	if err := o.ops.apply(&cfg); err != nil {
		return err
	}
	cp, err := controlplane.New(cfg, st, log.With("component", "controlplane"))
	if err != nil {
		return err
	}
	defer cp.Close()
	key, adminTok, err := ensureCredentials(ctx, cp, dataDir)
	if err != nil {
		return err
	}
	stopMetrics, err := metrics.serve(log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	err = serveControlPlane(ctx, cp, o.listen, serve.tls, log, nil, func() {
		printBanner(os.Stdout, serve, key)
		printOperator(os.Stdout, adminTok)
		metrics.printScrape(os.Stdout, publicURL)
		fmt.Fprintf(os.Stdout, "Add a host: make a registration token with\n\n  roost server token --data-dir %s\n\n"+
			"and start its agent with\n\n  roost agent --server %s --registration-token TOKEN --advertise https://AGENT-ADDRESS:7070\n\n",
			dataDir, publicURL)
	})
	log.Info("control plane stopped")
	return err
}

func runServerToken(ctx context.Context, o *serverOptions, w io.Writer) error {
	cp, closeCP, err := openControlPlane(ctx, o, controlplane.Config{})
	if err != nil {
		return err
	}
	defer closeCP()
	tok, err := cp.CreateRegistrationToken(ctx, o.tokenTTL)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, tok)
	return err
}

// openControlPlane opens the server's store and a control plane over it
// that serves nothing, for the subcommands that change its state (tokens,
// quotas); closeCP closes both.
func openControlPlane(ctx context.Context, o *serverOptions, cfg controlplane.Config) (cp *controlplane.Server, closeCP func(), err error) {
	log := newLogger(false, &o.level)
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return nil, nil, err
	}
	st, err := openStore(ctx, o.databaseURL, dataDir, log)
	if err != nil {
		return nil, nil, err
	}
	if cp, err = controlplane.New(cfg, st, log); err != nil {
		st.Close()
		return nil, nil, err
	}
	return cp, func() { cp.Close(); st.Close() }, nil
}

// openStore opens databaseURL, or, when it is empty, SQLite in
// <dataDir>/db/roost.db.
func openStore(ctx context.Context, databaseURL, dataDir string, log *slog.Logger, opts ...store.Option) (store.Store, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if databaseURL == "" {
		if err := os.MkdirAll(filepath.Join(dataDir, "db"), 0o700); err != nil {
			return nil, fmt.Errorf("database dir: %w", err)
		}
		databaseURL = "sqlite://" + filepath.Join(dataDir, "db", "roost.db")
	}
	return store.Open(ctx, databaseURL, log.With("component", "store"), opts...)
}

// serveControlPlane serves cp's API and proxy on listen, with TLS when
// tlsConfig is not nil, and runs its background loops until ctx ends,
// serving fails, or an error arrives on fail (the caller's other servers);
// then it shuts the server down. ready runs once the listener is open.
func serveControlPlane(ctx context.Context, cp *controlplane.Server, listen string, tlsConfig *tls.Config, log *slog.Logger, fail <-chan error, ready func()) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := newHTTPServer(cp.Handler(), log)
	srv.TLSConfig = tlsConfig
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	errs := make(chan error, 1)
	wg.Go(func() { _ = cp.Run(runCtx) })
	wg.Go(func() {
		if err := serve(srv, ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- err
		}
	})
	ready()
	select {
	case <-ctx.Done():
	case err = <-errs:
	case err = <-fail:
	}
	shutdownCtx, done := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer done()
	// The server stops accepting and drains the plain requests; the
	// control plane closes the connections handed over to it (WebSockets
	// with 1001, the proxy's upgraded ones), which the server does not,
	// so that clients reattach elsewhere instead of seeing them drop.
	var stopping sync.WaitGroup
	stopping.Go(func() {
		if err := cp.Shutdown(shutdownCtx); err != nil {
			log.Warn("control plane connections not closed in time", "err", err)
		}
	})
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("requests not drained in time", "err", err)
	}
	stopping.Wait()
	return err
}

// shutdownTimeout bounds a graceful stop: requests in flight have it to
// finish, WebSockets to close.
const shutdownTimeout = 5 * time.Second

// serve serves srv on ln: HTTPS when srv has a TLS configuration (its
// certificate is in it, not in files), else plain HTTP.
func serve(srv *http.Server, ln net.Listener) error {
	if srv.TLSConfig != nil {
		return srv.ServeTLS(ln, "", "")
	}
	return srv.Serve(ln)
}

// newHTTPServer is the control plane's HTTP server: HTTP/1.1 and HTTP/2
// (h2c in plain HTTP, negotiated by ALPN over TLS), with header and idle
// timeouts (streams and WebSockets have no body timeout; the header
// timeout bounds the TLS handshake too).
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler: h, Protocols: protocols,
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
