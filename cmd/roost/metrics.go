package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
)

// metricsTokenEnv supplies --metrics-token.
const metricsTokenEnv = "ROOST_METRICS_TOKEN"

// minMetricsToken is the shortest metrics token taken: it guards facts
// about the fleet on a public listener.
const minMetricsToken = 16

// metricsOptions are the Prometheus flags of roost server, roost up and
// roost agent (docs/prometheus.md).
type metricsOptions struct {
	// token is --metrics-token, else $ROOST_METRICS_TOKEN: the bearer
	// token every /metrics wants; "" wants none (only --metrics-listen
	// serves then).
	token string
	// listen is --metrics-listen: an address of its own for /metrics,
	// plain HTTP; "" for none.
	listen string
	// api: the API listener serves /metrics too, when there is a token
	// (the control plane's; the agent's RPC port is mutual TLS only).
	api bool
}

func (o *metricsOptions) addFlags(cmd *cobra.Command, api bool) {
	o.api = api
	f := cmd.Flags()
	listenUsage := "serve GET /metrics (Prometheus) on this address of its own, plain HTTP (default: none)"
	tokenUsage := "require 'Authorization: Bearer TOKEN' on --metrics-listen (default $" + metricsTokenEnv + "; at least 16 characters)"
	if api {
		listenUsage += "; without --metrics-token, with no authentication: keep it off public networks"
		tokenUsage = "serve GET /metrics on the API listener too, to 'Authorization: Bearer TOKEN' only, and require it on --metrics-listen (default $" +
			metricsTokenEnv + "; at least 16 characters). Without a token the API listener has no /metrics"
	}
	f.StringVar(&o.listen, "metrics-listen", "", listenUsage)
	f.StringVar(&o.token, "metrics-token", "", tokenUsage)
}

// metrics is the process's registry and how it is served.
type metrics struct {
	opts metricsOptions
	reg  *prometheus.Registry
	// handler serves the registry; the token is checked in front of it.
	handler http.Handler
	// addr is where --metrics-listen listens, once serving.
	addr string
}

// setup checks the flags and makes the registry: Go's runtime and the
// process's own collectors, and then whatever each component registers.
// A setting that cannot be honoured is an error.
func (o *metricsOptions) setup(log *slog.Logger) (*metrics, error) {
	if o.token == "" {
		o.token = os.Getenv(metricsTokenEnv)
	}
	switch {
	case o.token != "" && len(o.token) < minMetricsToken:
		return nil, fmt.Errorf("--metrics-token (or $%s): at least %d characters", metricsTokenEnv, minMetricsToken)
	case o.token != "" && strings.ContainsAny(o.token, " \t\r\n"):
		return nil, fmt.Errorf("--metrics-token (or $%s): no white space: it goes in an Authorization header", metricsTokenEnv)
	case o.token != "" && o.listen == "" && !o.api:
		return nil, fmt.Errorf("--metrics-token (or $%s) without --metrics-listen: the agent serves metrics only there (its RPC port is for the control plane)", metricsTokenEnv)
	}
	if o.listen != "" {
		if _, _, err := net.SplitHostPort(o.listen); err != nil {
			return nil, fmt.Errorf("--metrics-listen %q: %w", o.listen, err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		// A collector that fails (the store unreachable) is logged and
		// left out; the others are served.
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return &metrics{opts: *o, reg: reg, handler: h}, nil
}

// apiHandler is Config.Metrics of the control plane: nil without a
// token, so that the API listener has no /metrics.
func (m *metrics) apiHandler() http.Handler {
	if m.opts.token == "" {
		return nil
	}
	return m.handler
}

// serve serves GET /metrics on --metrics-listen, if given, until stop.
func (m *metrics) serve(log *slog.Logger) (stop func(), err error) {
	if m.opts.listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", m.opts.listen)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen: %w", err)
	}
	mux := http.NewServeMux()
	h := m.handler
	if m.opts.token != "" {
		h = bearer(m.opts.token, h)
	}
	mux.Handle("GET /metrics", h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 5 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	m.addr = ln.Addr().String()
	log.Info("metrics served", "addr", m.addr, "token", m.opts.token != "")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// bearer admits requests with the token only.
func bearer(token string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="roost metrics"`)
			http.Error(w, "missing or invalid metrics token (Authorization: Bearer)", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// printScrape says where the metrics are and how to fetch them; apiURL
// is the API listener's URL ("" for an agent).
func (m *metrics) printScrape(w io.Writer, apiURL string) {
	var where []string
	if m.opts.token != "" && apiURL != "" {
		where = append(where, strings.TrimSuffix(apiURL, "/")+"/metrics")
	}
	if m.addr != "" {
		where = append(where, "http://"+m.addr+"/metrics")
	}
	if len(where) == 0 {
		fmt.Fprintf(w, "Prometheus metrics are off: set --metrics-token (or $%s) to serve them on the API listener, or --metrics-listen.\n\n", metricsTokenEnv)
		return
	}
	auth := ""
	if m.opts.token != "" {
		auth = ` -H "Authorization: Bearer $` + metricsTokenEnv + `"`
	}
	fmt.Fprintf(w, "Prometheus metrics (docs/prometheus.md):\n\n")
	for _, u := range where {
		fmt.Fprintf(w, "  curl%s %s\n", auth, u)
	}
	fmt.Fprintln(w)
}
