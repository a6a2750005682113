package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"roost.dev/roost/agent"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
	"roost.dev/roost/runtime/firecracker"
	"roost.dev/roost/runtime/namespace"
	"roost.dev/roost/runtime/qemu"
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
	net     networkOptions
	cache   templateCacheOptions
	metrics metricsOptions

	// Registration with a control plane (roost server).
	server            string
	registrationToken string
	advertise         string
	name              string

	// volumeDir is --volume-dir: where the host's volumes are.
	volumeDir string
	warm      warmPoolOptions
}

func newAgentCmd() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the host agent: the sandboxes of this host, over Connect RPC and /proxy",
		Long: `Run the host agent. It serves the roost.hostagent.v1.HostAgentService Connect
service and /proxy/{id}/{port}/... on --listen. Sandboxes outlive the agent:
stopping it (SIGINT, SIGTERM, or kill -9) leaves them running, and the next
agent on the same --data-dir re-adopts them.

With --server it registers with a control plane: on first start it makes a
key, sends a certificate request with the one-time --registration-token
(which pins the control plane's cluster CA), and from then on serves mutual
TLS only: its certificate, and only the control plane's client certificate
admitted. Without --server it serves plain HTTP on a loopback address only,
and requires --token (or $` + tokenEnv + `) on every request.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runAgent(cmd.Context(), &o) },
	}
	f := cmd.Flags()
	f.StringVar(&o.dataDir, "data-dir", "/var/lib/roost", "data directory (templates, sandboxes, runtime state)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:7070", "listen address; without --server it must be a loopback address")
	f.StringVar(&o.runtime, "runtime", "auto", runtimeFlagUsage)
	f.StringVar(&o.envd, "envd", "", "envd binary injected into sandboxes (default: envd beside the roost executable, else on $PATH)")
	f.StringVar(&o.token, "token", "", "without --server: require 'Authorization: Bearer TOKEN' on RPC and /proxy (default $"+tokenEnv+"); a registered agent uses mutual TLS instead")
	f.BoolVar(&o.noPrune, "no-prune", false, "skip the start-up sweep of roost network namespaces, links, mounts and cgroups that no sandbox of this agent owns (set it when another agent shares this host)")
	f.TextVar(&o.level, "log-level", &o.level, "log level: debug, info, warn, error")
	o.net.addFlags(cmd)
	o.cache.addFlags(cmd)
	o.metrics.addFlags(cmd, false)
	o.warm.addFlags(cmd, nil)
	f.StringVar(&o.volumeDir, "volume-dir", "", "where volumes' images are kept (default DATA_DIR/volumes); agents of one control plane whose --volume-dir is one shared directory (NFS) may mount each other's volumes (docs/persistence.md)")
	f.StringVar(&o.server, "server", "", "control plane (roost server) URL to register with and heartbeat to, e.g. https://10.0.0.1:3000; for replicas, their URLs separated by commas (calls move on from one that is down)")
	f.StringVar(&o.registrationToken, "registration-token", "", "one-time registration token from 'roost server token' (default $"+registrationTokenEnv+"); needed on first start only, and to register again")
	f.StringVar(&o.advertise, "advertise", "", "URL the control plane reaches this agent at, https (default https://<--listen>); its host goes into the agent's certificate")
	f.StringVar(&o.name, "name", "", "host name shown by the control plane (default: the hostname)")
	return cmd
}

// registrationTokenEnv supplies --registration-token.
const registrationTokenEnv = "ROOST_REGISTRATION_TOKEN"

func runAgent(ctx context.Context, o *agentOptions) error {
	log := newLogger(true, &o.level)
	if o.token == "" {
		o.token = os.Getenv(tokenEnv)
	}
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	switch {
	case o.server != "" && o.token != "":
		return fmt.Errorf("--token is for an agent without --server: a registered agent is called over mutual TLS with certificates from the control plane")
	case o.server == "" && o.token == "":
		return fmt.Errorf("an agent without --server needs --token (or $%s): it never serves without authentication; to join a control plane, use --server and --registration-token", tokenEnv)
	case o.server == "" && !isLoopback(o.listen):
		return fmt.Errorf("--listen %s is not a loopback address: an agent without --server speaks plain HTTP, so it listens on loopback only; agents reached over a network register with --server and speak mutual TLS", o.listen)
	}
	metrics, err := o.metrics.setup(log)
	if err != nil {
		return err
	}
	m, err := openManager(ctx, dataDir, o.runtime, o.envd, o.noPrune, &o.net, hostSetup{budget: int64(o.cache.budget), volumeDir: o.volumeDir, warm: &o.warm}, metrics.reg, log)
	if err != nil {
		return err
	}
	defer m.Close()
	stopMetrics, err := metrics.serve(log)
	if err != nil {
		return err
	}
	defer stopMetrics()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if o.server == "" {
		err = agent.NewServer(m, agent.ServerConfig{Token: o.token}, log.With("component", "server")).Serve(ctx, ln)
	} else {
		err = serveRegistered(ctx, o, dataDir, m, ln, log)
	}
	log.Info("agent stopped; sandboxes keep running", "sandboxes", len(m.List()))
	return err
}

// serveRegistered registers with the control plane (or reuses the stored
// registration), then serves mutual TLS with the registration's
// certificate while it heartbeats; a refused registration stops the agent.
func serveRegistered(ctx context.Context, o *agentOptions, dataDir string, m *agent.Manager, ln net.Listener, log *slog.Logger) error {
	defer ln.Close()
	if o.registrationToken == "" {
		o.registrationToken = os.Getenv(registrationTokenEnv)
	}
	advertise := o.advertise
	if advertise == "" {
		host, _, err := net.SplitHostPort(ln.Addr().String())
		if a, perr := netip.ParseAddr(host); err != nil || perr != nil || a.IsUnspecified() {
			return fmt.Errorf("--listen %s has no single address the control plane can reach: set --advertise", o.listen)
		}
		advertise = "https://" + ln.Addr().String()
	}
	registrar, err := agent.NewRegistrar(agent.RegistrarConfig{
		ServerURL: o.server, RegistrationToken: o.registrationToken, AdvertiseURL: advertise,
		Name: o.name, StateFile: agent.RegistrationPath(dataDir),
	}, m, log.With("component", "registrar"))
	if err != nil {
		return err
	}
	reg, err := registrar.Register(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	// Templates come from the control plane, and builds go to it. No
	// timeout: it would bound a whole blob's transfer.
	m.UseControlPlane(reg, &http.Client{})
	tlsConfig, err := reg.TLS(time.Now())
	if err != nil {
		return fmt.Errorf("%w (remove %s and register again with a new token)", err, agent.RegistrationPath(dataDir))
	}
	srv := agent.NewServer(m, agent.ServerConfig{TLS: tlsConfig}, log.With("component", "server"))
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var serveErr, regErr error
	wg.Go(func() {
		serveErr = srv.Serve(runCtx, ln)
		cancel()
	})
	wg.Go(func() {
		if regErr = registrar.Run(runCtx, reg); regErr != nil {
			cancel()
		}
	})
	// A host without a current base builds it now, not at its first create.
	wg.Go(func() { prepareBase(runCtx, os.Stderr, m) })
	wg.Wait()
	return errors.Join(regErr, serveErr)
}

// hostSetup is how a host keeps the control plane's templates, its
// volumes and its warm pools.
type hostSetup struct {
	// budget is the cache's disk budget in bytes; 0 is the default.
	budget int64
	// shared: the blobs are the control plane's own (roost up).
	shared bool
	// volumeDir is where the host's volume images are; "" is
	// <data>/volumes.
	volumeDir string
	warm      *warmPoolOptions
}

// openManager builds the host's sandbox manager: the runtime driver, the
// network, the template store and content, and the sandboxes recovered
// from dataDir. `roost agent` serves it over RPC; `roost up` also drives
// it in-process.
func openManager(ctx context.Context, dataDir, runtimeName, envdFlag string, noPrune bool, netOpts *networkOptions, tpl hostSetup,
	reg prometheus.Registerer, log *slog.Logger) (*agent.Manager, error) {
	// A --runtime this build cannot run is the first thing to report.
	if _, err := selectRuntime(runtimeName); err != nil {
		return nil, err
	}
	if _, err := netOpts.config(false); err != nil {
		return nil, err
	}
	warmPools, warmMemoryMB, err := tpl.warm.config()
	if err != nil {
		return nil, err
	}
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
	netCfg, err := netOpts.config(rt.Name() != "namespace")
	if err != nil {
		return nil, err
	}
	nw, err := network.New(netCfg, log.With("component", "network"))
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	templates := template.NewStore(filepath.Join(dataDir, "templates"), log)
	return agent.New(ctx, agent.Config{
		DataDir: dataDir, Envd: envd, Version: buildVersion(), SkipPrune: noPrune,
		Blobs: newBlobs(dataDir), SharedBlobs: tpl.shared, TemplateCache: tpl.budget,
		BuildRuntime: buildRuntime(ctx, rt, dataDir, log), VolumeDir: tpl.volumeDir, Registerer: reg,
		WarmPools: warmPools, WarmPoolMemoryMB: warmMemoryMB,
	}, rt, nw, templates, log.With("component", "manager"))
}

// buildRuntime is the runtime of template builds on a host whose own
// runtime is not namespace: builds run their steps in namespace
// sandboxes, when this host can run them. Nil: the host's runtime.
func buildRuntime(ctx context.Context, rt runtime.Runtime, dataDir string, log *slog.Logger) runtime.Runtime {
	if rt.Name() == "namespace" {
		return nil
	}
	d, err := namespace.New(namespace.Config{DataDir: filepath.Join(dataDir, "runtime", "namespace")}, log.With("component", "namespace"))
	if err != nil {
		log.Info("template builds unavailable on this host", "reason", err)
		return nil
	}
	if a := d.Probe(ctx); !a.Available {
		log.Info("template builds unavailable on this host", "reason", a.Reason)
		return nil
	}
	return d
}

// runtimeFlagUsage documents --runtime for roost agent and roost up.
const runtimeFlagUsage = "runtime driver: namespace, qemu (VMs; under software emulation without /dev/kvm), firecracker (VMs; needs KVM, the firecracker binary and a guest vmlinux in DATA-DIR/runtime/firecracker), or auto (firecracker when this host can run it, else namespace)"

// selectRuntime checks --runtime: a driver name or auto.
func selectRuntime(name string) (string, error) {
	switch name {
	case "auto", "":
		return "auto", nil
	case "namespace", "qemu", "firecracker":
		return name, nil
	default:
		return "", fmt.Errorf("--runtime %q: want namespace, qemu, firecracker or auto: %w", name, errdefs.ErrInvalid)
	}
}

// newRuntime constructs the runtime driver named by --runtime and checks
// that this host can run it: one it cannot fails here, with the driver's
// reason, rather than at the first create. auto takes firecracker when
// the host can run it, else namespace (qemu only when asked: under
// emulation it is slow to start, and with KVM firecracker is leaner).
func newRuntime(ctx context.Context, name, dataDir string, log *slog.Logger) (runtime.Runtime, error) {
	name, err := selectRuntime(name)
	if err != nil {
		return nil, err
	}
	var rt runtime.Runtime
	if name == "auto" {
		fc := firecracker.New(firecrackerConfig(dataDir), log.With("component", "firecracker"))
		if a := fc.Probe(ctx); a.Available {
			rt = fc
		} else {
			log.Info("runtime auto: firecracker unavailable, using namespace", "reason", a.Reason)
			name = "namespace"
		}
	}
	switch name {
	case "namespace":
		d, err := namespace.New(namespace.Config{DataDir: filepath.Join(dataDir, "runtime", "namespace")}, log.With("component", "namespace"))
		if err != nil {
			return nil, err
		}
		rt = d
	case "qemu":
		rt = qemu.New(qemuConfig(dataDir), log.With("component", "qemu"))
	case "firecracker":
		rt = firecracker.New(firecrackerConfig(dataDir), log.With("component", "firecracker"))
	}
	a := rt.Probe(ctx)
	if !a.Available {
		return nil, fmt.Errorf("%s runtime unavailable on this host: %s", rt.Name(), a.Reason)
	}
	if a.Reason != "" {
		log.Warn("runtime available with a caveat", "runtime", rt.Name(), "reason", a.Reason)
	}
	log.Info("runtime selected", "runtime", rt.Name(), "capabilities", rt.Capabilities())
	return rt, nil
}

// firecrackerConfig is the firecracker driver's configuration under a
// data directory: the guest kernel is DATA-DIR/runtime/firecracker/vmlinux,
// the firecracker binary is found on $PATH. Dirty-page tracking is on, so
// a sandbox hibernated again after a restore writes only what it changed.
func firecrackerConfig(dataDir string) firecracker.Config {
	return firecracker.Config{DataDir: filepath.Join(dataDir, "runtime", "firecracker"), DiffSnapshots: true}
}

// qemuConfig is the qemu driver's configuration under a data directory;
// roost kernel prepare and the agent must agree on it.
func qemuConfig(dataDir string) qemu.Config {
	return qemu.Config{DataDir: filepath.Join(dataDir, "runtime", "qemu")}
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
