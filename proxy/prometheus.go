package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts a Proxy's traffic by kind (envd's port or a user port)
// and answer, never by sandbox: a fleet's sandboxes would each be a
// series. Set it in Config.Metrics; nil counts nothing.
type Metrics struct {
	requests      *prometheus.CounterVec
	requestBytes  *prometheus.CounterVec
	responseBytes *prometheus.CounterVec
	// envd and user are each kind's series, found once: a lookup by
	// label values hashes them and takes the vector's lock, on every
	// request.
	envd, user kindCounters
}

// kindCounters are one kind's series.
type kindCounters struct {
	kind    string
	in, out prometheus.Counter
	// requests by status class (see classIndex), made at their first
	// use so that a class that never occurred has no series.
	requests [6]atomic.Pointer[prometheus.Counter]
}

// classIndex is StatusClass's index in kindCounters.requests: 0 for
// none, 1 to 5 for 1xx to 5xx.
func classIndex(status int) int {
	if status < 100 || status > 599 {
		return 0
	}
	return status / 100
}

// counted counts one request of this kind that ended with status.
func (k *kindCounters) counted(m *Metrics, status int) {
	i := classIndex(status)
	c := k.requests[i].Load()
	if c == nil {
		counter := m.requests.WithLabelValues(k.kind, StatusClass(status))
		k.requests[i].Store(&counter)
		c = &counter
	}
	(*c).Inc()
}

// Kinds of proxied traffic, the kind label's values.
const (
	kindEnvd = "envd" // envd's port: commands, files, PTYs of the SDKs
	kindUser = "user" // any other port: the sandbox's own servers
)

// NewMetrics registers the proxy's metrics in r (see docs/prometheus.md);
// it fails when r has them already.
func NewMetrics(r prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_proxy_requests_total",
			Help: "Sandbox requests the proxy answered, by kind (envd, user) and status class (2xx...; none when the client left before an answer).",
		}, []string{"kind", "code"}),
		requestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_proxy_request_bytes_total",
			Help: "Bytes of request bodies (and, after a protocol upgrade, of everything the client sent) the proxy carried to sandboxes, by kind.",
		}, []string{"kind"}),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_proxy_response_bytes_total",
			Help: "Bytes of response bodies (and, after a protocol upgrade, of everything the sandbox sent) the proxy carried to clients, by kind.",
		}, []string{"kind"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.requestBytes, m.responseBytes} {
		if err := r.Register(c); err != nil {
			return nil, err
		}
	}
	// Every kind's byte series exist from the start, at zero.
	for _, k := range []*kindCounters{&m.envd, &m.user} {
		k.kind = kindUser
		if k == &m.envd {
			k.kind = kindEnvd
		}
		k.in, k.out = m.requestBytes.WithLabelValues(k.kind), m.responseBytes.WithLabelValues(k.kind)
	}
	return m, nil
}

// track counts one request of a kind: its body and its answer's, as they
// flow (a stream's bytes show while it lasts), and the answer's status
// when end is called. A nil m tracks nothing.
func (m *Metrics) track(w http.ResponseWriter, r *http.Request, envd bool) (http.ResponseWriter, *http.Request, func()) {
	if m == nil {
		return w, r, func() {}
	}
	k := &m.user
	if envd {
		k = &m.envd
	}
	mw := &meteredWriter{ResponseWriter: w, in: k.in, out: k.out}
	if r.Body != nil && r.Body != http.NoBody {
		body := &meteredBody{ReadCloser: r.Body, n: k.in}
		r = r.WithContext(r.Context()) // a shallow copy
		r.Body = body
	}
	return mw, r, func() { k.counted(m, mw.status) }
}

// StatusClass is a status as a metric's label: "2xx" for 200 and so on;
// "none" for no answer (the client left).
func StatusClass(status int) string {
	if status < 100 || status > 599 {
		return "none"
	}
	return strconv.Itoa(status/100) + "xx"
}

// meteredBody counts a request body's bytes as the proxy reads them.
type meteredBody struct {
	io.ReadCloser
	n prometheus.Counter
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(float64(n))
	return n, err
}

// meteredWriter records a response's final status and counts its body's
// bytes, and a hijacked connection's both ways. It unwraps for
// http.ResponseController (flushes, full duplex, deadlines).
type meteredWriter struct {
	http.ResponseWriter
	in, out prometheus.Counter
	status  int // the final status written; 0 until then
}

func (w *meteredWriter) WriteHeader(status int) {
	if w.status == 0 && status >= 200 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *meteredWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.out.Add(float64(n))
	return n, err
}

// FlushError flushes, saying why it could not (the client gone), which
// http.ResponseController hands to ReverseProxy.
func (w *meteredWriter) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *meteredWriter) Flush() { _ = w.FlushError() }

// Hijack hands over the connection of a protocol upgrade (ReverseProxy
// then writes the 101 itself and copies both ways), counted.
func (w *meteredWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.status = http.StatusSwitchingProtocols
	return &meteredConn{Conn: conn, in: w.in, out: w.out}, brw, nil
}

func (w *meteredWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// meteredConn counts an upgraded connection's bytes.
type meteredConn struct {
	net.Conn
	in, out prometheus.Counter
}

func (c *meteredConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(float64(n))
	return n, err
}

func (c *meteredConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(float64(n))
	return n, err
}
