package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func TestDeleteTeam(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "t1")
		mustTeam(t, s, "t2")
		if err := s.CreateAPIKey(ctx, APIKey{ID: "k1", TeamID: "t1", Name: "k", Hash: HashKey("k1"), Prefix: "p"}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateSandbox(ctx, Sandbox{ID: "sb1", TeamID: "t1", HostID: "h", State: SandboxPaused}); err != nil {
			t.Fatal(err)
		}
		var busy *TeamBusyError
		if err := s.DeleteTeam(ctx, "t1"); !errors.As(err, &busy) || busy.Sandboxes != 1 || !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("delete a team with a paused sandbox: %v, want a TeamBusyError of 1 sandbox", err)
		}
		if err := s.DeleteSandbox(ctx, "sb1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteTeam(ctx, "t1"); err != nil {
			t.Fatalf("delete an empty team: %v", err)
		}
		if _, err := s.APIKeyByHash(ctx, HashKey("k1")); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("the deleted team's key still authenticates: %v", err)
		}
		if err := s.DeleteTeam(ctx, "t1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("delete again: %v, want not found", err)
		}
		teams, err := s.ListTeams(ctx)
		if err != nil || len(teams) != 1 || teams[0].ID != "t2" {
			t.Fatalf("teams left: %v, %v", teams, err)
		}
	})
}

func TestAdminTokens(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		if n, err := s.CountAdminTokens(ctx); err != nil || n != 0 {
			t.Fatalf("count on a new store: %d, %v", n, err)
		}
		tok := AdminToken{ID: "adm1", Name: "operator", Hash: HashKey("secret"), Prefix: "pre", MaskSuffix: "suf", CreatedAt: base}
		if err := s.CreateAdminToken(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAdminToken(ctx, tok); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("duplicate: %v", err)
		}
		got, err := s.AdminTokenByHash(ctx, HashKey("secret"))
		if err != nil || got.ID != "adm1" || !got.CreatedAt.Equal(base) {
			t.Fatalf("by hash: %+v, %v", got, err)
		}
		if _, err := s.AdminTokenByHash(ctx, HashKey("other")); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("unknown: %v", err)
		}
		if n, _ := s.CountAdminTokens(ctx); n != 1 {
			t.Fatalf("count: %d", n)
		}
	})
}

func TestAudit(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		var entries []AuditEntry
		for i := range 5 {
			team := "t1"
			if i%2 == 1 {
				team = "t2"
			}
			entries = append(entries, AuditEntry{At: base.Add(time.Duration(i) * time.Second), TeamID: team, Actor: "api_key:k",
				Action: "sandbox.create", Target: fmt.Sprintf("sb%d", i), Source: "127.0.0.1", Status: 201})
		}
		if err := s.AppendAudit(ctx, entries...); err != nil {
			t.Fatal(err)
		}
		page, next, err := s.ListAudit(ctx, AuditFilter{TeamID: "t1", Limit: 2})
		if err != nil || len(page) != 2 || page[0].Target != "sb0" || page[1].Target != "sb2" || next == "" {
			t.Fatalf("first page of t1: %+v next %q, %v", page, next, err)
		}
		page, next, err = s.ListAudit(ctx, AuditFilter{TeamID: "t1", Limit: 2, Cursor: next})
		if err != nil || len(page) != 1 || page[0].Target != "sb4" || next != "" {
			t.Fatalf("second page of t1: %+v next %q, %v", page, next, err)
		}
		page, _, err = s.ListAudit(ctx, AuditFilter{Since: base.Add(time.Second), Until: base.Add(3 * time.Second)})
		if err != nil || len(page) != 2 || page[0].Target != "sb1" || page[1].Target != "sb2" {
			t.Fatalf("time window: %+v, %v", page, err)
		}
		if _, _, err := s.ListAudit(ctx, AuditFilter{Cursor: "!!"}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("bad cursor: %v", err)
		}
		if n, err := s.PruneAudit(ctx, base.Add(2*time.Second)); err != nil || n != 2 {
			t.Fatalf("prune: %d, %v", n, err)
		}
	})
}

func TestEventsAndDeliveries(t *testing.T) {
	eachDB(t, func(t *testing.T, s Store) {
		ctx := context.Background()
		mustTeam(t, s, "t1")
		mustTeam(t, s, "t2")
		hook := Webhook{ID: "wh1", TeamID: "t1", Name: "n", URL: "http://127.0.0.1:1/", Secret: "s",
			Events: []string{EventCreated, EventKilled}, Enabled: true}
		if err := s.CreateWebhook(ctx, hook); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateWebhook(ctx, Webhook{ID: "wh2", TeamID: "t1", Events: []string{EventCreated}}); err != nil {
			t.Fatal(err) // disabled: gets nothing
		}
		var evs []Event
		for i, typ := range []string{EventCreated, EventPaused, EventKilled} {
			at := base.Add(time.Duration(i) * time.Second)
			evs = append(evs, Event{ID: NewEventID(at), At: at, TeamID: "t1", SandboxID: "sb1", Type: typ, Data: []byte(`{"reason":"api"}`),
				RunningDelta: []int{1, -1, 0}[i]})
		}
		other := Event{ID: NewEventID(base), At: base, TeamID: "t2", SandboxID: "sb2", Type: EventCreated}
		// One batch of two teams' events: wh1 gets t1's created and
		// killed.
		if queued, err := s.AppendEvents(ctx, append(evs, other)...); err != nil || queued != 2 {
			t.Fatalf("append: %d deliveries queued, %v; want 2", queued, err)
		}
		got, err := s.ListEvents(ctx, EventFilter{TeamID: "t1", Asc: true})
		if err != nil || len(got) != 3 || got[0].Type != EventCreated || got[2].Type != EventKilled || string(got[0].Data) != `{"reason":"api"}` {
			t.Fatalf("t1's events: %+v, %v", got, err)
		}
		counts, err := s.TeamEventCounts(ctx, "t1", base)
		if err != nil || len(counts) != 2 || !counts[0].Created || counts[0].RunningDelta != 1 || counts[1].RunningDelta != -1 {
			t.Fatalf("team event counts: %+v, %v", counts, err)
		}
		// t2 has no webhooks: its events go in without deliveries (and
		// without a transaction).
		killed := Event{ID: NewEventID(base.Add(time.Second)), At: base.Add(time.Second), TeamID: "t2", SandboxID: "sb2", Type: EventKilled}
		if queued, err := s.AppendEvents(ctx, killed); err != nil || queued != 0 {
			t.Fatalf("append t2's: %d deliveries queued, %v; want none", queued, err)
		}
		if got, err := s.ListEvents(ctx, EventFilter{TeamID: "t2", Asc: true}); err != nil || len(got) != 2 || got[1].ID != killed.ID {
			t.Fatalf("t2's events: %+v, %v", got, err)
		}
		if _, err := s.AppendEvents(ctx, killed); !errors.Is(err, errdefs.ErrConflict) {
			t.Fatalf("an event appended twice: %v, want a conflict", err)
		}
		if _, err := s.AppendEvents(ctx, Event{ID: "x", TeamID: "t1", Type: EventKilled, RunningDelta: 2}); !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("a delta of 2: %v", err)
		}
		got, _ = s.ListEvents(ctx, EventFilter{TeamID: "t1", Types: []string{EventPaused}})
		if len(got) != 1 || got[0].Type != EventPaused {
			t.Fatalf("by type: %+v", got)
		}
		got, _ = s.ListEvents(ctx, EventFilter{TeamID: "t1", Asc: true, AfterAt: evs[0].At, AfterID: evs[0].ID})
		if len(got) != 2 || got[0].ID != evs[1].ID {
			t.Fatalf("after the first: %+v", got)
		}
		got, _ = s.ListEvents(ctx, EventFilter{TeamID: "t1", Offset: 1, Limit: 1})
		if len(got) != 1 || got[0].ID != evs[1].ID {
			t.Fatalf("newest first, offset 1: %+v", got)
		}

		// wh1 gets created and killed, one at a time, in order.
		now := base.Add(time.Hour)
		claim := func() []DueDelivery {
			t.Helper()
			due, err := s.ClaimDeliveries(ctx, now, now.Add(time.Minute), 10)
			if err != nil {
				t.Fatal(err)
			}
			return due
		}
		due := claim()
		if len(due) != 1 || due[0].Event.Type != EventCreated || due[0].Webhook.Secret != "s" {
			t.Fatalf("first claim: %+v", due)
		}
		if again := claim(); len(again) != 0 {
			t.Fatalf("a leased delivery was claimed again: %+v", again)
		}
		if err := s.RecordAttempt(ctx, due[0].ID, Attempt{At: now, Status: 500, Error: "boom", State: DeliveryPending, NextAt: now.Add(time.Second)}); err != nil {
			t.Fatal(err)
		}
		if early := claim(); len(early) != 0 {
			t.Fatalf("claimed before its retry time: %+v", early)
		}
		now = now.Add(2 * time.Second)
		due = claim()
		if len(due) != 1 || due[0].Event.Type != EventCreated || due[0].Attempts != 1 {
			t.Fatalf("retry claim: %+v", due)
		}
		if err := s.RecordAttempt(ctx, due[0].ID, Attempt{At: now, Status: 200, State: DeliveryDelivered, NextAt: now}); err != nil {
			t.Fatal(err)
		}
		due = claim()
		if len(due) != 1 || due[0].Event.Type != EventKilled {
			t.Fatalf("next in order: %+v", due)
		}
		log, err := s.ListDeliveries(ctx, "t1", "wh1", 10)
		if err != nil || len(log) != 2 || log[1].State != DeliveryDelivered || log[1].Attempts != 2 || log[1].LastStatus != 200 {
			t.Fatalf("delivery log: %+v, %v", log, err)
		}
		if other, _ := s.ListDeliveries(ctx, "t2", "wh1", 10); len(other) != 0 {
			t.Fatalf("another team reads the log: %+v", other)
		}
		if _, err := s.UpdateWebhook(ctx, "t2", "wh1", func(*Webhook) error { return nil }); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("another team updates: %v", err)
		}
		w, err := s.UpdateWebhook(ctx, "t1", "wh1", func(w *Webhook) error { w.Enabled = false; return nil })
		if err != nil || w.Enabled {
			t.Fatalf("disable: %+v, %v", w, err)
		}
		if n, err := s.PruneEvents(ctx, base.Add(90*time.Minute)); err != nil || n != 5 { // t1's three, t2's two
			t.Fatalf("prune: %d, %v", n, err)
		}
		if log, _ := s.ListDeliveries(ctx, "t1", "wh1", 10); len(log) != 0 {
			t.Fatalf("deliveries outlived their events: %+v", log)
		}
		if err := s.DeleteWebhook(ctx, "t1", "wh1"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteWebhook(ctx, "t1", "wh1"); !errors.Is(err, errdefs.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})
}
