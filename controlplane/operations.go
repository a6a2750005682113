package controlplane

import (
	"context"
	"net/http"
	"time"

	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// Defaults of the operations settings.
const (
	defaultAuditRetention  = 90 * 24 * time.Hour
	defaultEventRetention  = 7 * 24 * time.Hour
	defaultWebhookRetryFor = time.Hour
	defaultWebhookTimeout  = 10 * time.Second
	// pruneInterval is how often old audit entries and events go.
	pruneInterval = 10 * time.Minute
)

func operationDefaults(cfg *Config) {
	if cfg.AuditRetention <= 0 {
		cfg.AuditRetention = defaultAuditRetention
	}
	if cfg.EventRetention <= 0 {
		cfg.EventRetention = defaultEventRetention
	}
	if cfg.WebhookRetryFor <= 0 {
		cfg.WebhookRetryFor = defaultWebhookRetryFor
	}
	if cfg.WebhookTimeout <= 0 {
		cfg.WebhookTimeout = defaultWebhookTimeout
	}
}

// prune deletes the audit entries and events past their retention.
func (s *Server) prune(ctx context.Context) {
	now := s.store.Now()
	if n, err := s.store.PruneAudit(ctx, now.Add(-s.cfg.AuditRetention)); err != nil {
		s.log.Warn("audit log not pruned", "err", err)
	} else if n > 0 {
		s.log.Info("audit log pruned", "entries", n)
	}
	if n, err := s.store.PruneEvents(ctx, now.Add(-s.cfg.EventRetention)); err != nil {
		s.log.Warn("events not pruned", "err", err)
	} else if n > 0 {
		s.log.Info("events pruned", "events", n)
	}
}

// operationRoutes are the routes of lifecycle events, webhooks, the
// audit log and team metrics.
func (s *Server) operationRoutes(mux *http.ServeMux, api func(pattern string, h apiHandler)) {
	api("GET /events/sandboxes", s.listTeamEvents)
	api("GET /events/sandboxes/{id}", s.listSandboxEvents)
	api("GET /v1/events", s.streamEvents)
	api("POST /events/webhooks", s.createWebhook)
	api("GET /events/webhooks", s.listWebhooks)
	api("GET /events/webhooks/{id}", s.getWebhook)
	api("PATCH /events/webhooks/{id}", s.updateWebhook)
	api("DELETE /events/webhooks/{id}", s.deleteWebhook)
	api("GET /events/webhooks/{id}/deliveries", s.listDeliveries)
	api("GET /teams/{teamID}/metrics", s.teamMetrics)
	api("GET /teams/{teamID}/metrics/max", s.teamMetricsMax)
	// The audit log: a team's credential reads its team's; the operator's
	// token alone reads every team's, or ?team='s.
	mux.Handle("GET /v1/audit", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(wire.HeaderAdminToken) != "" && r.Header.Get(wire.HeaderTeamID) == "" {
			s.adminOnly(func(w http.ResponseWriter, r *http.Request, _ store.AdminToken) {
				s.listAudit(w, r, r.URL.Query().Get("team"))
			}).ServeHTTP(w, r)
			return
		}
		s.authenticate(func(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
			s.listAudit(w, r, cred.TeamID)
		}).ServeHTTP(w, r)
	}))
}
