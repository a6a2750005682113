package agent

import (
	"context"
	"crypto/subtle"
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
	return newServer(&service{m: m}, m, cfg, log)
}

func newServer(svc hostagentv1connect.HostAgentServiceHandler, res resolver, cfg ServerConfig, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, log: log, proxy: newProxy(res, log.With("component", "proxy"))}
	mux := http.NewServeMux()
	mux.Handle(hostagentv1connect.NewHostAgentServiceHandler(svc))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
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
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
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
	served := make(chan error, 1)
	wg.Go(func() { served <- srv.Serve(ln) })
	s.log.Info("agent listening", "addr", ln.Addr().String(), "auth", s.cfg.Token != "")

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
