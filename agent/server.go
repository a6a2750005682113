package agent

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/wire"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Token, when set, is required as "Authorization: Bearer <token>" (or
	// wire.HeaderAgentToken, which leaves a client's own
	// Authorization header to the sandbox) on every request but /health.
	Token string
	// TLS, when set, makes Serve speak TLS only: a registered agent's
	// configuration (Registration.TLS) requires the control plane's
	// client certificate in the handshake, so nothing, /health included,
	// answers without it.
	TLS *tls.Config
}

// Server is the agent's HTTP surface: the HostAgentService Connect service,
// /proxy/{id}/{port}/..., and /health.
type Server struct {
	cfg     ServerConfig
	log     *slog.Logger
	proxy   *sandboxProxy
	handler http.Handler
}

// NewServer builds the HTTP surface over m.
func NewServer(m *Manager, cfg ServerConfig, log *slog.Logger) *Server {
	return newServer(NewService(m), m, cfg, log)
}

// NewService is m's RPC service: what NewServer serves, for a control
// plane in the same process to call without HTTP.
func NewService(m *Manager) hostagentv1connect.HostAgentServiceHandler {
	return &service{m: m}
}

func newServer(svc hostagentv1connect.HostAgentServiceHandler, res resolver, cfg ServerConfig, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, proxy: newProxy(res, log.With("component", "proxy"))}
	mux := http.NewServeMux()
	// Answers go uncompressed even to a control plane that asks for
	// gzip (older ones do): a listing of a thousand sandboxes costs the
	// agent, and the control plane, more CPU to pack and unpack than its
	// bytes cost a data centre's network.
	mux.Handle(hostagentv1connect.NewHostAgentServiceHandler(svc, connect.WithCompression("gzip", nil, nil)))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	if v, ok := res.(volumeServer); ok {
		mux.HandleFunc("/volumecontent/{id}/{op}", v.volumeContent)
	}
	if m, ok := res.(moveServer); ok {
		mux.HandleFunc("GET "+wire.MovePath+"{id}", m.serveExport)
		mux.HandleFunc("PUT "+wire.MovePath+"{id}", m.serveImport)
		mux.HandleFunc("DELETE "+wire.MovePath+"{id}", m.serveCancelMove)
	}
	s.handler = s.authorize(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Proxied paths bypass the mux, which would clean them ("//",
		// "..") and so change what the sandbox's server receives.
		if strings.HasPrefix(r.URL.Path, wire.ProxyPrefix) {
			s.proxy.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	return s
}

// Handler is the whole HTTP surface, authorization included.
func (s *Server) Handler() http.Handler { return s.handler }

// authorize requires the configured token on everything but /health, and
// strips it before the request goes on (so it never reaches a sandbox).
func (s *Server) authorize(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	want := []byte(s.cfg.Token)
	errs := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			next.ServeHTTP(w, r)
			return
		}
		header, got := wire.HeaderAgentToken, r.Header.Get(wire.HeaderAgentToken)
		if got == "" {
			header = "Authorization"
			got, _ = strings.CutPrefix(r.Header.Get(header), "Bearer ")
		}
		if got == "" || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			err := fmt.Errorf("missing or invalid agent token: %w", errdefs.ErrUnauthenticated)
			if strings.HasPrefix(r.URL.Path, wire.ProxyPrefix) || !errs.IsSupported(r) {
				errdefs.WriteHTTP(w, errdefs.HTTPStatus(err), err.Error())
				return
			}
			_ = errs.Write(w, r, errdefs.ToConnect(err))
			return
		}
		r.Header.Del(header)
		next.ServeHTTP(w, r)
	})
}

// Serve serves on ln until ctx ends, then shuts the server down, giving
// open requests a few seconds. Sandboxes keep running.
//
// A server with neither TLS nor a token is refused: an agent never
// listens without authentication.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.cfg.TLS == nil && s.cfg.Token == "" {
		_ = ln.Close()
		return fmt.Errorf("agent server: neither mutual TLS nor a token: refusing to serve unauthenticated: %w", errdefs.ErrInvalid)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(s.cfg.TLS != nil)
	protocols.SetUnencryptedHTTP2(s.cfg.TLS == nil)
	srv := &http.Server{
		Handler:           s.handler,
		Protocols:         protocols,
		TLSConfig:         s.cfg.TLS,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	served := make(chan error, 1)
	wg.Go(func() {
		if s.cfg.TLS != nil {
			served <- srv.ServeTLS(ln, "", "")
			return
		}
		served <- srv.Serve(ln)
	})
	s.log.Info("agent listening", "addr", ln.Addr().String(), "mutual_tls", s.cfg.TLS != nil, "token", s.cfg.Token != "")

	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		err = srv.Shutdown(sctx)
		if errors.Is(err, context.DeadlineExceeded) {
			err = srv.Close()
		}
	}
	wg.Wait()
	s.proxy.close()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("agent server: %w", err)
	}
	return nil
}
