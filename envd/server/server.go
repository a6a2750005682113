package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/defaults"
	"roost.dev/roost/envd/files"
	"roost.dev/roost/envd/filesystem"
	"roost.dev/roost/envd/identity"
	"roost.dev/roost/envd/lograte"
	"roost.dev/roost/envd/metrics"
	"roost.dev/roost/envd/portforward"
	"roost.dev/roost/envd/process"
	"roost.dev/roost/gen/filesystem/filesystemconnect"
	"roost.dev/roost/gen/process/processconnect"
	"roost.dev/roost/wire"
)

// Version is envd's version as E2B clients compare it. The SDKs gate
// features on it; e2b 2.51.0 (JS) knows these gates, and envd has every
// feature behind them: 0.3.0 stdin off, 0.4.0 default user, 0.5.2
// closeStdin, 0.5.7 octet-stream uploads, 0.6.2 upload metadata
// (X-Metadata-* headers), 0.6.3 includeEntry and 0.6.4 allowNetworkMounts
// on watches. Raise it only together with the feature a newer gate needs.
const Version = "0.6.4"

// envd's log lines a second, sustained, and at once (a start-up, a burst
// of ports opening).
const (
	logRate  = 20
	logBurst = 200
)

// Config configures a Server.
type Config struct {
	// Addr is the listen address; default ":" and wire.EnvdPort.
	Addr string
	// DefaultUser runs requests that name no user until /init sets one;
	// default the user envd runs as.
	DefaultUser string
	// ForwardPorts makes loopback-only servers reachable on the external
	// addresses. Off by default: on a developer's host it would expose them.
	ForwardPorts bool
	// Guest says envd is the agent of a VM guest, as root: /init may set
	// the machine's clock from its timestamp (a VM resumed from a snapshot
	// needs it), and its hostname and random state (a VM forked from a
	// capture has the captured one's). Off by default, for the same reason.
	Guest bool
	// OwnHostname says envd's sandbox has a hostname of its own (its own
	// UTS namespace, as in a namespace sandbox): /init may set it (a
	// forked sandbox has its source's). Guest implies it.
	OwnHostname bool
	// LocalEnvs serves GET /envs without the access token to processes in
	// the sandbox (loopback): they are given those variables anyway, and a
	// server the template started before the sandbox had them (the code
	// interpreter's kernels, started when a template is captured) reads
	// them there.
	LocalEnvs bool
	// Disk is the filesystem whose usage /metrics reports; default "/".
	Disk string
	// ReserveThreads is how many OS threads envd makes at start and keeps,
	// so that it survives a sandbox whose pids limit is exhausted. 0 = none.
	ReserveThreads int
}

// Server is a running envd.
type Server struct {
	cfg      Config
	log      *slog.Logger
	defaults *defaults.Set
	guard    *auth.Guard
	process  *process.Service
	fs       *filesystem.Service
	ports    *portforward.Forwarder
	kick     func() // ports.Kick; a test's own to count kicks
	sampler  *metrics.Sampler
	handler  http.Handler
}

// New builds a Server; Serve starts it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = ":" + strconv.Itoa(wire.EnvdPort)
	}
	if cfg.Disk == "" {
		cfg.Disk = "/"
	}
	if cfg.DefaultUser == "" {
		me, err := identity.Current()
		if err != nil {
			return nil, err
		}
		cfg.DefaultUser = me.Name
	}
	if _, err := identity.Lookup(cfg.DefaultUser); err != nil {
		return nil, fmt.Errorf("default user: %w", err)
	}
	// Much of what envd logs, the sandbox causes (listeners coming and
	// going, processes failing to start): a loop of it must not flood the
	// sandbox's console.
	log = slog.New(lograte.New(log.Handler(), logRate, logBurst))
	// envd's stderr is a pipe the agent drains; while no agent runs it has
	// no reader, and a Go program that is not notified of SIGPIPE dies of a
	// write to a broken stderr. Notified, the write fails with EPIPE and
	// the line is lost, which is what an absent reader means. The channel
	// is never read: a signal that does not fit is dropped.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	s := &Server{cfg: cfg, log: log, defaults: defaults.New(cfg.DefaultUser), sampler: metrics.NewSampler("/proc", "/sys/fs/cgroup", cfg.Disk)}
	if cfg.ReserveThreads > 0 {
		reserveThreads(cfg.ReserveThreads)
	}
	s.guard = auth.NewGuard(s.defaults)
	s.process = process.New(s.guard, log.With("service", "process"))
	s.fs = filesystem.New(s.guard, log.With("service", "filesystem"))
	var exclude []uint16
	if _, port, err := net.SplitHostPort(cfg.Addr); err == nil {
		if p, err := strconv.ParseUint(port, 10, 16); err == nil {
			exclude = append(exclude, uint16(p))
		}
	}
	s.ports = portforward.New(portforward.Config{Exclude: exclude}, log.With("service", "portforward"))
	s.kick = s.ports.Kick

	mux := http.NewServeMux()
	mux.Handle(processconnect.NewProcessHandler(s.process))
	mux.Handle(filesystemconnect.NewFilesystemHandler(s.fs))
	mux.Handle("/files", files.New(s.guard, log.With("service", "files")))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("POST /init", s.init)
	mux.HandleFunc("GET /envs", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, s.defaults.Envs()) })
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("GET /ports", func(w http.ResponseWriter, r *http.Request) {
		if ports, err := s.ports.PortsNow(r.Context()); err == nil {
			writeJSON(w, ports)
		}
	})
	guarded := s.guard.Wrap(mux)
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			// A request may start a server, or be a proxy's word that a
			// port refused it (wire.EnvdScanPath, without a token): look
			// for new servers promptly. /health is what clients poll.
			s.kick()
		}
		if cfg.LocalEnvs && r.Method == http.MethodGet && r.URL.Path == "/envs" && r.Header.Get(auth.TokenHeader) == "" && fromLoopback(r) {
			writeJSON(w, s.defaults.Envs())
			return
		}
		guarded.ServeHTTP(w, r)
	})
	return s, nil
}

// fromLoopback reports whether r came from the sandbox itself.
func fromLoopback(r *http.Request) bool {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// Handler is envd's whole HTTP surface, access check included.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve listens on the configured address and serves until ctx ends, then
// shuts down, giving open requests a few seconds, and stops every process.
func (s *Server) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener the caller opened.
func (s *Server) ServeListener(ctx context.Context, ln net.Listener) error {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s.handler,
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	fwdCtx, stopFwd := context.WithCancel(context.WithoutCancel(ctx))
	if s.cfg.ForwardPorts {
		wg.Go(func() {
			if err := s.ports.Run(fwdCtx); err != nil && !errors.Is(err, context.Canceled) {
				s.log.Error("port forwarder stopped", "err", err)
			}
		})
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.log.Info("envd listening", "addr", ln.Addr().String(), "version", Version, "forward_ports", s.cfg.ForwardPorts)

	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = srv.Shutdown(shutdownCtx)
	}
	stopFwd()
	wg.Wait()
	s.fs.Close()
	s.process.Close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// initRequest is the body of POST /init.
type initRequest struct {
	defaults.Init
	// Timestamp is the control plane's clock; a VM restored from a snapshot
	// has a stale one.
	Timestamp *time.Time `json:"timestamp"`
	machineIdentity
}

func (s *Server) init(w http.ResponseWriter, r *http.Request) {
	var req initRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&req); err != nil {
		auth.WriteError(w, http.StatusBadRequest, "invalid init body: "+err.Error())
		return
	}
	if req.DefaultUser != "" {
		if _, err := identity.Lookup(req.DefaultUser); err != nil {
			auth.WriteError(w, http.StatusBadRequest, "defaultUser: "+err.Error())
			return
		}
	}
	if err := req.machineIdentity.check(s.cfg.Guest, s.cfg.Guest || s.cfg.OwnHostname); err != nil {
		auth.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.defaults.Apply(req.Init)
	if req.Timestamp != nil && s.cfg.Guest {
		if skew := time.Since(*req.Timestamp); skew > time.Second || skew < -time.Second {
			tv := unix.NsecToTimeval(req.Timestamp.UnixNano())
			if err := unix.Settimeofday(&tv); err != nil {
				s.log.Warn("set clock failed", "err", err)
			}
		}
	}
	if err := req.machineIdentity.apply(); err != nil {
		auth.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request) {
	rep, err := s.sampler.Sample()
	if err != nil {
		auth.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, rep)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
