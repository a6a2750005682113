package controlplane_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/agent"
	"roost.dev/roost/tlscert"
)

// registration is POST /v1/hosts/register's answer.
type registration struct{ HostID, Token, Certificate, CA string }

// tlsAgent is e's agent served a second time, over mutual TLS as a
// registered agent serves: the listener is open (its address goes into
// the certificate) but serves once start has the registration.
type tlsAgent struct {
	srv *httptest.Server
	key []byte
	csr []byte
	url string
}

func (e *testenv) newTLSAgent(t *testing.T) *tlsAgent {
	t.Helper()
	key, csr, err := tlscert.NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(agent.NewServer(e.agent, agent.ServerConfig{}, slog.New(slog.DiscardHandler)).Handler())
	t.Cleanup(srv.Close)
	return &tlsAgent{srv: srv, key: key, csr: csr, url: "https://" + srv.Listener.Addr().String()}
}

// start checks the registration answer against the token's pin and
// serves with its certificate.
func (a *tlsAgent) start(t *testing.T, regToken string, got registration) {
	t.Helper()
	pin := regToken[strings.LastIndex(regToken, ".")+1:]
	cfg, err := tlscert.CheckAgentCertificate([]byte(got.Certificate), a.key, []byte(got.CA), pin, time.Now())
	if err != nil {
		t.Fatalf("registration answer: %v", err)
	}
	a.srv.TLS = cfg
	a.srv.StartTLS()
}

// registerTLSHost registers a host served by e's agent over mutual TLS,
// with body's fields (name, capacity, capabilities), and returns its
// registration.
func (e *testenv) registerTLSHost(t *testing.T, body map[string]any) registration {
	t.Helper()
	tok, err := e.cp.CreateRegistrationToken(t.Context(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	a := e.newTLSAgent(t)
	body["registrationToken"], body["url"], body["csr"] = tok, a.url, string(a.csr)
	var got registration
	e.do("POST", "/v1/hosts/register", "", body).want(t, http.StatusCreated).decode(t, &got)
	a.start(t, tok, got)
	return got
}
