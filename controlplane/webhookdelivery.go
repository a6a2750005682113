package controlplane

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"roost.dev/roost/store"
)

// Delivery timing. A delivery that fails is tried again after
// deliveryBackoff, doubling up to deliveryMaxBackoff, until
// Config.WebhookRetryFor has passed since its event; the webhook's later
// events wait behind it, so each endpoint gets its events in order.
const (
	deliveryBackoff    = time.Second
	deliveryMaxBackoff = time.Minute
	// deliveryLease is how long a claimed delivery is this control
	// plane's: longer than one attempt.
	deliveryLease = time.Minute
	// deliveryPoll is how often the queue is read when nothing woke the
	// deliverer (other control planes' events, retries coming due).
	deliveryPoll = time.Second
	// deliveryBatch bounds the deliveries claimed per round.
	deliveryBatch = 32
	// maxReceiverBody is how much of an endpoint's answer is read.
	maxReceiverBody = 4 << 10
)

// Headers of a delivery: E2B's, and roost's HMAC signature.
const (
	headerWebhookID        = "e2b-webhook-id"
	headerDeliveryID       = "e2b-delivery-id"
	headerSignatureVersion = "e2b-signature-version"
	headerSignature        = "e2b-signature"
	// headerRoostSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256 of
	// the secret over "<t>.<body>">": unlike E2B's it binds the time, so
	// a receiver can refuse a replayed delivery.
	headerRoostSignature = "Roost-Signature"
)

// e2bSignature is E2B's signature: SHA-256 of the secret followed by the
// body, in base64 without padding.
func e2bSignature(secret string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(secret))
	h.Write(body)
	return base64.RawStdEncoding.EncodeToString(h.Sum(nil))
}

// roostSignature is the Roost-Signature header's value for a delivery at t.
func roostSignature(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts + "."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// deliverer sends queued deliveries. Its goroutine is Run's; each
// delivery is sent by a goroutine of its own, at most maxInFlight at
// once, so a slow endpoint holds up only its own webhook's later events.
type deliverer struct {
	s      *Server
	client *http.Client
	slots  chan struct{} // one per delivery in flight
	freed  chan struct{} // a delivery ended: its webhook's next may be due
	wg     sync.WaitGroup
}

// maxInFlight bounds the deliveries sent at once.
const maxInFlight = 64

func newDeliverer(s *Server) *deliverer {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		return s.webhookAddrAllowed(ap.Addr())
	}}
	tr := &http.Transport{DialContext: dialer.DialContext, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4,
		IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 5 * time.Second, ResponseHeaderTimeout: s.cfg.WebhookTimeout}
	return &deliverer{s: s, slots: make(chan struct{}, maxInFlight), freed: make(chan struct{}, 1), client: &http.Client{
		Transport: tr,
		Timeout:   s.cfg.WebhookTimeout,
		// A redirect is an answer: the endpoint moved, which the team
		// must fix; following it would reach where the check never looked.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// run sends what is due until ctx ends, then waits for the deliveries
// in flight; a round that panics is logged and the next one goes on.
func (d *deliverer) run(ctx context.Context) {
	defer func() {
		d.wg.Wait()
		d.client.CloseIdleConnections()
	}()
	for {
		wake := d.s.events.deliveries()
		d.safeRound(ctx)
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-d.freed:
		case <-time.After(deliveryPoll):
		}
	}
}

func (d *deliverer) safeRound(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			d.s.log.Error("webhook delivery round panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	d.round(ctx)
}

// round claims what is due, as many as there are free slots, and sends
// each in a goroutine of its own.
func (d *deliverer) round(ctx context.Context) {
	free := min(cap(d.slots)-len(d.slots), deliveryBatch)
	if free <= 0 {
		return
	}
	now := d.s.store.Now()
	due, err := d.s.store.ClaimDeliveries(ctx, now, now.Add(deliveryLease), free)
	if err != nil {
		if ctx.Err() == nil {
			d.s.log.Warn("webhook deliveries not read", "err", err)
		}
		return
	}
	for _, dd := range due {
		d.slots <- struct{}{}
		d.wg.Go(func() {
			defer func() {
				<-d.slots
				select {
				case d.freed <- struct{}{}:
				default:
				}
			}()
			d.deliver(ctx, dd)
		})
	}
}

// deliver makes one attempt and records it.
func (d *deliverer) deliver(ctx context.Context, dd store.DueDelivery) {
	status, err := d.send(ctx, dd)
	now := d.s.store.Now()
	a := store.Attempt{At: now, Status: status, State: store.DeliveryDelivered, NextAt: now}
	if err != nil {
		a.Error = err.Error()
		a.State = store.DeliveryPending
		a.NextAt = now.Add(backoff(dd.Attempts))
		if a.NextAt.Sub(dd.Event.At) > d.s.cfg.WebhookRetryFor {
			a.State = store.DeliveryFailed
		}
	}
	// Recorded even as the server stops: the lease would otherwise hold
	// the delivery for a minute.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rpcTimeout)
	defer cancel()
	if err := d.s.store.RecordAttempt(rctx, dd.ID, a); err != nil {
		d.s.log.Warn("webhook attempt not recorded", "delivery", dd.ID, "err", err)
	}
	log := d.s.log.With("webhook", dd.WebhookID, "delivery", dd.ID, "event", dd.EventID, "attempt", dd.Attempts+1)
	switch a.State {
	case store.DeliveryFailed:
		log.Warn("webhook delivery given up", "status", status, "err", err)
	case store.DeliveryPending:
		log.Debug("webhook delivery failed; will retry", "status", status, "err", err, "next", a.NextAt)
	}
}

// backoff is the wait after the attempts-th failure.
func backoff(attempts int) time.Duration {
	d := deliveryBackoff << min(attempts, 10)
	return min(d, deliveryMaxBackoff)
}

// send POSTs the event; a 2xx answer is success.
func (d *deliverer) send(ctx context.Context, dd store.DueDelivery) (int, error) {
	body, err := json.Marshal(eventView(dd.Event))
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, dd.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "roost-webhooks/1")
	h.Set(headerWebhookID, dd.WebhookID)
	h.Set(headerDeliveryID, dd.ID)
	h.Set(headerSignatureVersion, "v1")
	h.Set(headerSignature, e2bSignature(dd.Webhook.Secret, body))
	h.Set(headerRoostSignature, roostSignature(dd.Webhook.Secret, time.Now(), body))
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxReceiverBody))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("endpoint answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}
