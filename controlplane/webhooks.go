package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

// Webhook limits.
const (
	maxWebhooksPerTeam = 20
	maxWebhookURLLen   = 2048
	maxWebhookSecret   = 256
	minWebhookSecret   = 8
)

// webhookJSON is E2B's webhook as its API answers it; the secret is
// never shown again.
type webhookJSON struct {
	ID        string    `json:"id"`
	TeamID    string    `json:"teamId"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
	Enabled   bool      `json:"enabled"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
}

func webhookView(w store.Webhook) webhookJSON {
	return webhookJSON{ID: w.ID, TeamID: w.TeamID, Name: w.Name, CreatedAt: w.CreatedAt, Enabled: w.Enabled, URL: w.URL, Events: w.Events}
}

// webhookRequest is the body of a create (all but enabled required) or
// an update (what is given replaces).
type webhookRequest struct {
	Name            *string   `json:"name"`
	URL             *string   `json:"url"`
	Enabled         *bool     `json:"enabled"`
	Events          *[]string `json:"events"`
	SignatureSecret *string   `json:"signatureSecret"`
}

// check refuses what req gives that a webhook cannot have, resolving
// its URL (checkWebhookURL).
func (s *Server) check(ctx context.Context, req webhookRequest) error {
	if req.Name != nil && (len(*req.Name) > maxKeyNameLen || strings.ContainsFunc(*req.Name, isControl)) {
		return invalidf("name: at most %d bytes, no control characters", maxKeyNameLen)
	}
	if req.URL != nil {
		if err := s.checkWebhookURL(ctx, *req.URL); err != nil {
			return err
		}
	}
	if req.Events != nil {
		types, err := parseEventTypes(*req.Events)
		if err != nil {
			return err
		}
		if len(types) == 0 {
			return invalidf("events: name at least one of %v", store.EventTypes)
		}
	}
	if req.SignatureSecret != nil {
		if n := len(*req.SignatureSecret); n < minWebhookSecret || n > maxWebhookSecret {
			return invalidf("signatureSecret: %d to %d bytes", minWebhookSecret, maxWebhookSecret)
		}
	}
	return nil
}

// set gives w what req gives, which check passed.
func (req webhookRequest) set(w *store.Webhook) {
	if req.Name != nil {
		w.Name = *req.Name
	}
	if req.URL != nil {
		w.URL = *req.URL
	}
	if req.Enabled != nil {
		w.Enabled = *req.Enabled
	}
	if req.Events != nil {
		types, _ := parseEventTypes(*req.Events)
		w.Events = dedupe(types)
	}
	if req.SignatureSecret != nil {
		w.Secret = *req.SignatureSecret
	}
}

func dedupe(vs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range vs {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// createWebhook is E2B's POST /events/webhooks.
func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	var req webhookRequest
	err := decodeJSON(r.Body, &req)
	if err == nil && (req.URL == nil || req.Events == nil || req.SignatureSecret == nil) {
		err = invalidf("url, events and signatureSecret are required")
	}
	hook := store.Webhook{ID: "wh_" + randomString(10), TeamID: cred.TeamID, Enabled: true, CreatedAt: s.store.Now()}
	if err == nil {
		err = s.check(r.Context(), req)
	}
	req.set(&hook)
	if err == nil {
		var hooks []store.Webhook
		hooks, err = s.store.ListWebhooks(r.Context(), cred.TeamID)
		if err == nil && len(hooks) >= maxWebhooksPerTeam {
			err = fmt.Errorf("a team has at most %d webhooks: %w", maxWebhooksPerTeam, errdefs.ErrExhausted)
		}
	}
	if err == nil {
		noteTarget(r, cred.TeamID, hook.ID)
		err = s.store.CreateWebhook(r.Context(), hook)
	}
	if err != nil {
		s.fail(w, r, "create webhook", err)
		return
	}
	s.log.Info("webhook created", "team", cred.TeamID, "webhook", hook.ID, "url", hook.URL)
	writeJSON(w, http.StatusCreated, webhookView(hook))
}

// listWebhooks is E2B's GET /events/webhooks.
func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	hooks, err := s.store.ListWebhooks(r.Context(), cred.TeamID)
	if err != nil {
		s.fail(w, r, "list webhooks", err)
		return
	}
	out := make([]webhookJSON, 0, len(hooks))
	for _, h := range hooks {
		out = append(out, webhookView(h))
	}
	writeJSON(w, http.StatusOK, out)
}

// getWebhook is E2B's GET /events/webhooks/{id}.
func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	hook, err := s.store.GetWebhook(r.Context(), cred.TeamID, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, "get webhook", notFoundAs(err, "webhook", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, webhookView(hook))
}

// updateWebhook is E2B's PATCH /events/webhooks/{id}: the fields given
// replace the webhook's.
func (s *Server) updateWebhook(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	var req webhookRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.fail(w, r, "update webhook", err)
		return
	}
	if err := s.check(r.Context(), req); err != nil {
		s.fail(w, r, "update webhook", err)
		return
	}
	hook, err := s.store.UpdateWebhook(r.Context(), cred.TeamID, r.PathValue("id"), func(h *store.Webhook) error {
		req.set(h)
		return nil
	})
	if err != nil {
		s.fail(w, r, "update webhook", notFoundAs(err, "webhook", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, webhookView(hook))
}

// deleteWebhook is E2B's DELETE /events/webhooks/{id}, with its
// deliveries.
func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	if err := s.store.DeleteWebhook(r.Context(), cred.TeamID, r.PathValue("id")); err != nil {
		s.fail(w, r, "delete webhook", notFoundAs(err, "webhook", r.PathValue("id")))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deliveryJSON is one delivery of GET /events/webhooks/{id}/deliveries.
type deliveryJSON struct {
	ID         string     `json:"id"`
	EventID    string     `json:"eventId"`
	EventType  string     `json:"eventType"`
	EventAt    time.Time  `json:"eventTimestamp"`
	State      string     `json:"state"`
	Attempts   int        `json:"attempts"`
	LastStatus int        `json:"lastStatus,omitempty"`
	LastError  string     `json:"lastError,omitempty"`
	NextAt     *time.Time `json:"nextAttemptAt,omitempty"`
	DoneAt     *time.Time `json:"doneAt,omitempty"`
}

// listDeliveries is roost's GET /events/webhooks/{id}/deliveries?limit=:
// the webhook's delivery log, newest first.
func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	id := r.PathValue("id")
	_, err := s.store.GetWebhook(r.Context(), cred.TeamID, id)
	var ds []store.Delivery
	if err == nil {
		ds, err = s.store.ListDeliveries(r.Context(), cred.TeamID, id, store.DefaultPageSize)
	}
	if err != nil {
		s.fail(w, r, "list deliveries", notFoundAs(err, "webhook", id))
		return
	}
	out := make([]deliveryJSON, 0, len(ds))
	for _, d := range ds {
		v := deliveryJSON{ID: d.ID, EventID: d.EventID, EventType: d.EventType, EventAt: d.EventAt, State: d.State,
			Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: d.LastError}
		if d.State == store.DeliveryPending {
			v.NextAt = &d.NextAt
		} else {
			v.DoneAt = &d.DoneAt
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// checkWebhookURL refuses a URL that is not http(s), does not resolve,
// or resolves to an address webhooks may not reach (webhookAddrAllowed).
// Deliveries check the address again as they dial: a name may resolve
// elsewhere later.
func (s *Server) checkWebhookURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil || len(raw) > maxWebhookURLLen:
		return invalidf("url %q: want an http or https URL of at most %d bytes", raw, maxWebhookURLLen)
	case u.Scheme != "http" && u.Scheme != "https", u.Hostname() == "":
		return invalidf("url %q: want an http or https URL with a host", raw)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
	if err != nil || len(addrs) == 0 {
		return invalidf("url %q: its host does not resolve", raw)
	}
	for _, a := range addrs {
		if err := s.webhookAddrAllowed(a); err != nil {
			return invalidf("url %q: %v", raw, err)
		}
	}
	return nil
}

// sharedAddressSpace is 100.64.0.0/10 (carrier-grade NAT), which
// netip's IsPrivate leaves out.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// errWebhookAddr refuses an address webhooks may not reach.
var errWebhookAddr = errors.New("points at this host or a private, loopback, link-local or reserved address; " +
	"the operator allows such a range with --webhook-allow-cidr")

// webhookAddrAllowed refuses what a team's webhook must not reach
// unless the operator allows its range (Config.WebhookAllowCIDRs): the
// host itself, loopback, private and shared ranges, link-local (cloud
// metadata), multicast, unspecified and reserved addresses.
func (s *Server) webhookAddrAllowed(a netip.Addr) error {
	a = a.Unmap()
	for _, p := range s.cfg.WebhookAllowCIDRs {
		if p.Contains(a) {
			return nil
		}
	}
	if !a.IsGlobalUnicast() || a.IsPrivate() || sharedAddressSpace.Contains(a) || isLocalAddr(a) ||
		a.Is4() && a.As4()[0] >= 240 {
		return errWebhookAddr
	}
	return nil
}

// isLocalAddr says whether a is one of this host's own addresses.
func isLocalAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: refuse
	}
	for _, ia := range addrs {
		if n, ok := ia.(*net.IPNet); ok {
			if la, ok := netip.AddrFromSlice(n.IP); ok && la.Unmap() == a {
				return true
			}
		}
	}
	return false
}
