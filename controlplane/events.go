package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"roost.dev/roost/store"
)

// Why a sandbox changed state: the reason of its event.
const (
	reasonAPI        = "api"         // its team asked
	reasonAdmin      = "admin"       // the operator asked
	reasonTimeout    = "timeout"     // its timeout passed
	reasonRetention  = "retention"   // its team keeps too many paused
	reasonAutoResume = "auto_resume" // traffic came while it was paused
	reasonFork       = "fork"        // made by a fork
	reasonHostLost   = "host_lost"   // its host stopped answering or lost it
	reasonHostBack   = "host_back"   // its host has it again
	reasonLostExpiry = "lost_expiry" // lost past its timeout: the record went
)

// eventJSON is E2B's sandbox lifecycle event (version v2), as the events
// API lists it and webhooks receive it.
type eventJSON struct {
	Version            string          `json:"version"`
	ID                 string          `json:"id"`
	Type               string          `json:"type"`
	EventData          json.RawMessage `json:"eventData"`
	SandboxBuildID     string          `json:"sandboxBuildId"`
	SandboxExecutionID string          `json:"sandboxExecutionId"`
	SandboxID          string          `json:"sandboxId"`
	SandboxTeamID      string          `json:"sandboxTeamId"`
	SandboxTemplateID  string          `json:"sandboxTemplateId"`
	Timestamp          time.Time       `json:"timestamp"`
}

func eventView(e store.Event) eventJSON {
	return eventJSON{Version: "v2", ID: e.ID, Type: e.Type, EventData: e.Data, SandboxBuildID: e.BuildID,
		SandboxExecutionID: e.ExecutionID, SandboxID: e.SandboxID, SandboxTeamID: e.TeamID,
		SandboxTemplateID: e.TemplateID, Timestamp: e.At}
}

// eventData is an event's eventData: E2B's fields and roost's reason.
type eventData struct {
	Metadata  map[string]string `json:"sandbox_metadata"`
	Reason    string            `json:"reason,omitempty"`
	Execution *executionJSON    `json:"execution,omitempty"`
	// Timeout is the sandbox's new end, on an update.
	EndAt *time.Time `json:"end_at,omitempty"`
}

// executionJSON is E2B's summary of the run that ends, on killed and
// paused events.
type executionJSON struct {
	StartedAt     time.Time `json:"started_at"`
	VCPUCount     int       `json:"vcpu_count"`
	MemoryMB      int64     `json:"memory_mb"`
	ExecutionTime int64     `json:"execution_time"` // milliseconds
}

// executionID names one run of a sandbox: from a start or resume to the
// next pause or kill.
func executionID(sb store.Sandbox) string {
	h := sha256.Sum256([]byte(sb.ID + "/" + strconv.FormatInt(sb.StartedAt.UnixNano(), 10)))
	return hex.EncodeToString(h[:16])
}

// emit records that sb changed state (typ), for reason. sb is the record
// before the change for killed and lost (whether it was running counts),
// after it for the others. It never waits on the store or on webhooks:
// the event goes to the event log's queue.
func (s *Server) emit(sb store.Sandbox, typ, reason string) {
	d := eventData{Metadata: sb.Metadata, Reason: reason}
	if d.Metadata == nil {
		d.Metadata = map[string]string{}
	}
	switch typ {
	case store.EventKilled, store.EventPaused:
		if !sb.StartedAt.IsZero() {
			d.Execution = &executionJSON{StartedAt: sb.StartedAt, VCPUCount: sb.VCPUs, MemoryMB: sb.MemoryMB,
				ExecutionTime: time.Since(sb.StartedAt).Milliseconds()}
		}
	case store.EventUpdated:
		if !sb.EndAt.IsZero() {
			end := sb.EndAt
			d.EndAt = &end
		}
	}
	data, _ := json.Marshal(d)
	s.events.add(store.Event{TeamID: sb.TeamID, SandboxID: sb.ID, Type: typ, TemplateID: sb.TemplateID,
		ExecutionID: executionID(sb), Data: data, RunningDelta: runningDelta(sb, typ)})
}

// runningDelta is how an event of typ on sb (as emit takes it) changes
// its team's count of running sandboxes.
func runningDelta(sb store.Sandbox, typ string) int {
	running := sb.State == store.SandboxRunning
	switch {
	case typ == store.EventCreated, typ == store.EventResumed, typ == store.EventRecovered && running:
		return 1
	case typ == store.EventPaused, (typ == store.EventKilled || typ == store.EventLost) && running:
		return -1
	}
	return 0
}

// eventQueueLen bounds the events waiting for the store; an emit that
// finds the queue full waits for room, so none is dropped.
const eventQueueLen = 4096

// eventLog stores events in batches, in the order they were emitted,
// and wakes whoever waits for new ones (SSE streams, the webhook
// deliverer). It lives from New to Close.
type eventLog struct {
	st  store.Store
	log *slog.Logger

	mu   sync.Mutex // guards last and the order of sends on q
	last time.Time  // the last event's time: times never go back
	q    chan store.Event
	done chan struct{}

	stored broadcast // events were stored
	queued broadcast // webhook deliveries were queued
	// off drops every event: what benchmarks compare with (tests only).
	off atomic.Bool
}

func newEventLog(st store.Store, log *slog.Logger) *eventLog {
	l := &eventLog{st: st, log: log, q: make(chan store.Event, eventQueueLen), done: make(chan struct{})}
	go l.run()
	return l
}

// add stamps e with the time and a time-ordered ID, under one lock with
// its send, so the queue's order is the order of (At, ID).
func (l *eventLog) add(e store.Event) {
	if l.off.Load() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	defer func() { _ = recover() }() // closed: the server is stopping
	now := l.st.Now()
	if !now.After(l.last) {
		now = l.last.Add(time.Nanosecond)
	}
	l.last = now
	e.At, e.ID = now, store.NewEventID(now)
	l.q <- e
}

func (l *eventLog) run() {
	defer close(l.done)
	var began time.Time // when the last batch began to be stored
	for e := range l.q {
		batch := gather(l.q, e, batchLinger-time.Since(began))
		began = time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		queued, err := l.st.AppendEvents(ctx, batch...)
		if err != nil {
			l.log.Error("lifecycle events not stored", "events", len(batch), "err", err)
		}
		cancel()
		l.stored.notify()
		if queued > 0 {
			l.queued.notify()
		}
	}
}

// changed is closed when events are next stored.
func (l *eventLog) changed() <-chan struct{} { return l.stored.wait() }

// deliveries is closed when webhook deliveries are next queued here.
func (l *eventLog) deliveries() <-chan struct{} { return l.queued.wait() }

// broadcast wakes all its waiters at once. Its zero value is ready.
type broadcast struct {
	mu sync.Mutex    // guards ch
	ch chan struct{} // nil while nobody waits
}

// wait returns a channel closed at the next notify.
func (b *broadcast) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcast) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// close stores what is queued and stops.
func (l *eventLog) close() {
	l.mu.Lock()
	select {
	case <-l.done:
	default:
		close(l.q)
	}
	l.mu.Unlock()
	<-l.done
}

// Page bounds of E2B's events API.
const (
	defaultEventsPage = 10
	maxEventsPage     = 100
)

// parseEventFilter reads E2B's query: offset, limit, orderAsc and types
// (repeated, or comma-separated).
func parseEventFilter(q map[string][]string) (store.EventFilter, error) {
	f := store.EventFilter{Limit: defaultEventsPage}
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	if v := get("offset"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return f, invalidf("offset=%q: want a number from 0", v)
		}
		f.Offset = n
	}
	if v := get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxEventsPage {
			return f, invalidf("limit=%q: want 1 to %d", v, maxEventsPage)
		}
		f.Limit = n
	}
	if v := get("orderAsc"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, invalidf("orderAsc=%q: want true or false", v)
		}
		f.Asc = b
	}
	types, err := parseEventTypes(q["types"])
	f.Types = types
	return f, err
}

// parseEventTypes reads event types, repeated or comma-separated; an
// unknown one is refused.
func parseEventTypes(vs []string) ([]string, error) {
	var out []string
	for _, v := range vs {
		for _, t := range splitList(v) {
			if !slices.Contains(store.EventTypes, t) {
				return nil, invalidf("unknown event type %q (known: %v)", t, store.EventTypes)
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// listTeamEvents is E2B's GET /events/sandboxes: the team's events,
// newest first unless orderAsc.
func (s *Server) listTeamEvents(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	s.listEvents(w, r, cred, "")
}

// listSandboxEvents is E2B's GET /events/sandboxes/{id}: one sandbox's
// events, also after it was killed. Another team's sandbox has none.
func (s *Server) listSandboxEvents(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	s.listEvents(w, r, cred, r.PathValue("id"))
}

func (s *Server) listEvents(w http.ResponseWriter, r *http.Request, cred store.APIKey, sandboxID string) {
	f, err := parseEventFilter(r.URL.Query())
	var events []store.Event
	if err == nil {
		f.TeamID, f.SandboxID = cred.TeamID, sandboxID
		events, err = s.store.ListEvents(r.Context(), f)
	}
	if err != nil {
		s.fail(w, r, "list events", err)
		return
	}
	out := make([]eventJSON, 0, len(events))
	for _, e := range events {
		out = append(out, eventView(e))
	}
	writeJSON(w, http.StatusOK, out)
}

// splitList splits a comma-separated value, dropping empty parts.
func splitList(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
