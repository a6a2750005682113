package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/tlscert"
)

func TestTLSFlagsRefuseWhatCannotWork(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct {
		o              tlsOptions
		domain, listen string
		want           string
	}{
		"cert without key":    {tlsOptions{certFile: "c.pem"}, "roost.test", "127.0.0.1:443", "--tls-cert and --tls-key go together"},
		"key without cert":    {tlsOptions{enabled: true, keyFile: "k.pem"}, "roost.test", "127.0.0.1:443", "--tls-cert and --tls-key go together"},
		"bad domain":          {tlsOptions{enabled: true}, "roost_test", "127.0.0.1:443", "--domain"},
		"wildcard domain":     {tlsOptions{enabled: true}, "*.roost.test", "127.0.0.1:443", "--domain"},
		"listen without port": {tlsOptions{enabled: true}, "roost.test", "127.0.0.1", "--listen"},
		"missing cert file":   {tlsOptions{certFile: filepath.Join(dir, "none.pem"), keyFile: filepath.Join(dir, "none-key.pem")}, "roost.test", "127.0.0.1:443", "--tls-cert"},
	} {
		if _, err := c.o.resolve(dir, c.domain, c.listen, time.Now()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %s", name, err, c.want)
		}
	}
}

func TestTLSFlagsPublicURL(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		tls                 bool
		domain, listen, url string
		domainMode          bool
	}{
		{false, "localhost", "127.0.0.1:3000", "http://127.0.0.1:3000", false},
		{false, "roost.test", "127.0.0.1:443", "http://127.0.0.1:443", false},
		{true, "Roost.Test.", "127.0.0.1:443", "https://api.roost.test", true},
		{true, "roost.test", "0.0.0.0:8443", "https://api.roost.test:8443", false},
		{true, "localhost", "127.0.0.1:3000", "https://localhost:3000", false},
		{true, "localhost", "127.0.0.1:443", "https://localhost", false},
	} {
		s, err := (&tlsOptions{enabled: c.tls}).resolve(dir, c.domain, c.listen, time.Now())
		if err != nil {
			t.Errorf("%+v: %v", c, err)
			continue
		}
		if s.publicURL != c.url || s.domainMode != c.domainMode || (s.tls != nil) != c.tls {
			t.Errorf("%+v: url %s, domain mode %v, tls %v", c, s.publicURL, s.domainMode, s.tls != nil)
		}
	}
}

// TestTLSServesDomainOverHTTP2 serves the private CA's certificate as roost
// up does and reaches api.{domain} and a sandbox host name, trusting the
// CA file alone, over HTTP/2 and HTTP/1.1.
func TestTLSServesDomainOverHTTP2(t *testing.T) {
	dir := t.TempDir()
	s, err := (&tlsOptions{enabled: true}).resolve(dir, "roost.test", "127.0.0.1:443", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "tls", "roost.test", tlscert.CertFileName); s.caFile != want || !s.caCreated {
		t.Fatalf("CA file %s (created %v), want %s", s.caFile, s.caCreated, want)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.Host)
	}), slog.New(slog.DiscardHandler))
	srv.TLSConfig = s.tls
	go serve(srv, ln)
	t.Cleanup(func() { srv.Close() })

	pemCA, err := os.ReadFile(s.caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemCA)
	for _, h2 := range []bool{true, false} {
		for _, host := range []string{"api.roost.test", "49983-abc123.roost.test"} {
			tr := &http.Transport{
				TLSClientConfig:   &tls.Config{RootCAs: roots},
				ForceAttemptHTTP2: h2,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
				},
			}
			if !h2 {
				tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
			}
			res, err := (&http.Client{Transport: tr}).Get("https://" + host + "/")
			if err != nil {
				t.Fatalf("%s (h2 %v): %v", host, h2, err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			want := "HTTP/1.1 " + host
			if h2 {
				want = "HTTP/2.0 " + host
			}
			if string(body) != want {
				t.Errorf("got %q, want %q", body, want)
			}
			tr.CloseIdleConnections()
		}
	}
}

func TestBannerInDomainMode(t *testing.T) {
	s := &serving{publicURL: "https://api.roost.test", domain: "roost.test", caFile: "/d/tls/roost.test/ca.pem", domainMode: true}
	var b bytes.Buffer
	printBanner(&b, s, apiKey{value: "roost_k", created: true, file: "/d/api-key"})
	for _, want := range []string{
		"export NODE_EXTRA_CA_CERTS=/d/tls/roost.test/ca.pem", "export SSL_CERT_FILE=/d/tls/roost.test/ca.pem",
		"export REQUESTS_CA_BUNDLE=/d/tls/roost.test/ca.pem", "curl --cacert /d/tls/roost.test/ca.pem https://api.roost.test/health",
		"export E2B_DOMAIN=roost.test", "export E2B_API_KEY=roost_k",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("banner lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "export E2B_API_URL") {
		t.Errorf("the domain-mode banner sets E2B_API_URL:\n%s", b.String())
	}
}
