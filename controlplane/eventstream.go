package controlplane

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/store"
)

const (
	// streamPoll is how often a stream reads the store even when this
	// process stored nothing: other control planes' events.
	streamPoll = time.Second
	// streamOverlap is how far back each read looks again: another
	// control plane may commit an event a moment after a later one was
	// read. Events already sent are skipped by ID.
	streamOverlap = 5 * time.Second
	// streamKeepAlive is how often an idle stream sends a comment, so
	// proxies keep it open.
	streamKeepAlive = 15 * time.Second
)

// streamEvents is GET /v1/events: the team's lifecycle events as
// server-sent events, from now on (or after the Last-Event-ID the client
// sends when it reconnects, within the events' retention), filtered by
// ?types= and ?sandbox=. Each event's id is its position; its data is
// the event as the events API lists it.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, cred store.APIKey) {
	types, err := parseEventTypes(r.URL.Query()["types"])
	if err != nil {
		s.fail(w, r, "stream events", err)
		return
	}
	f := store.EventFilter{TeamID: cred.TeamID, SandboxID: r.URL.Query().Get("sandbox"), Types: types, Asc: true, Limit: store.MaxPageSize}
	from := s.store.Now()
	if last := r.Header.Get("Last-Event-ID"); last != "" {
		at, id, err := parseStreamID(last)
		if err != nil {
			s.fail(w, r, "stream events", err)
			return
		}
		from, f.AfterAt, f.AfterID = at, at, id
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	st := eventStream{w: w, rc: rc, sent: map[string]time.Time{}}
	ctx := r.Context()
	for {
		wake := s.events.changed()
		f.Since = from.Add(-streamOverlap)
		events, err := s.store.ListEvents(ctx, f)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("event stream read failed", "team", cred.TeamID, "err", err)
			}
			return
		}
		for _, e := range events {
			if err := st.send(e); err != nil {
				return
			}
			if e.At.After(from) {
				from = e.At
			}
		}
		if len(events) == f.Limit { // more to read now, past this page
			last := events[len(events)-1]
			f.AfterAt, f.AfterID = last.At, last.ID
			continue
		}
		f.AfterAt, f.AfterID = time.Time{}, ""
		st.forget(from.Add(-2 * streamOverlap))
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-time.After(streamPoll):
		}
		if time.Since(st.lastWrite) > streamKeepAlive {
			if err := st.keepAlive(); err != nil {
				return
			}
		}
	}
}

// eventStream writes one client's server-sent events.
type eventStream struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	sent      map[string]time.Time // IDs sent in the overlap window
	lastWrite time.Time
}

func (st *eventStream) send(e store.Event) error {
	if _, ok := st.sent[e.ID]; ok {
		return nil
	}
	st.sent[e.ID] = e.At
	data, err := json.Marshal(eventView(e))
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(st.w, "id: %s\nevent: %s\ndata: %s\n\n", streamID(e), e.Type, data); err != nil {
		return err
	}
	st.lastWrite = time.Now()
	return st.rc.Flush()
}

func (st *eventStream) keepAlive() error {
	if _, err := fmt.Fprint(st.w, ": keep-alive\n\n"); err != nil {
		return err
	}
	st.lastWrite = time.Now()
	return st.rc.Flush()
}

// forget drops the IDs of events older than before: no read reaches them.
func (st *eventStream) forget(before time.Time) {
	for id, at := range st.sent {
		if at.Before(before) {
			delete(st.sent, id)
		}
	}
}

// streamID is an event's position: its time in Unix nanoseconds, '.',
// its ID.
func streamID(e store.Event) string {
	return strconv.FormatInt(e.At.UnixNano(), 10) + "." + e.ID
}

func parseStreamID(s string) (time.Time, string, error) {
	ns, id, ok := strings.Cut(s, ".")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" || n <= 0 {
		return time.Time{}, "", invalidf("Last-Event-ID %q: not an event's id", s)
	}
	return time.Unix(0, n).UTC(), id, nil
}
