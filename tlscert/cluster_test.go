package tlscert

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

func newClusterCA(t *testing.T) *ClusterCA {
	t.Helper()
	c, k, err := NewClusterCA(t0)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ParseClusterCA(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// handshake runs a TLS handshake over a pipe and returns the server's
// and the client's errors.
func handshake(server, client *tls.Config) (error, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errs := make(chan error, 1)
	go func() { errs <- tls.Server(a, server).Handshake(); a.Close() }()
	cerr := tls.Client(b, client).Handshake()
	b.Close()
	return <-errs, cerr
}

func TestClusterCAMutualTLS(t *testing.T) {
	ca, other := newClusterCA(t), newClusterCA(t)
	now := func() time.Time { return t0 }
	key, csr, err := NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignAgent(csr, "hostab", "10.0.0.5", t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckAgentCertificate(cert, key, other.CertPEM(), ca.Fingerprint(), t0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("another CA than the pinned one: %v, want ErrInvalid", err)
	}
	serverCfg, err := CheckAgentCertificate(cert, key, ca.CertPEM(), ca.Fingerprint(), t0)
	if err != nil {
		t.Fatal(err)
	}
	serverCfg.Time = now
	cp, err := ca.ClientTLS(now)
	if err != nil {
		t.Fatal(err)
	}
	cp.Time = now
	for name, c := range map[string]string{"address": "10.0.0.5", "host ID": "hostab"} {
		cfg := cp.Clone()
		cfg.ServerName = c
		if serr, cerr := handshake(serverCfg, cfg); serr != nil || cerr != nil {
			t.Errorf("control plane by %s: server %v, client %v", name, serr, cerr)
		}
	}
	wrongName := cp.Clone()
	wrongName.ServerName = "10.0.0.6"
	if _, cerr := handshake(serverCfg, wrongName); cerr == nil {
		t.Error("the agent's certificate was accepted for another address")
	}
	otherCP, _ := other.ClientTLS(now)
	otherCP.InsecureSkipVerify, otherCP.Time = true, now
	agentCert, _ := tls.X509KeyPair(cert, key)
	for name, c := range map[string]*tls.Config{
		"no certificate":            {InsecureSkipVerify: true, Time: now},
		"another CA's":              otherCP,
		"the agent's own (same CA)": {InsecureSkipVerify: true, Time: now, Certificates: []tls.Certificate{agentCert}},
	} {
		if serr, _ := handshake(serverCfg, c); serr == nil {
			t.Errorf("client with %s certificate admitted", name)
		}
	}
	for name, bad := range map[string][]byte{
		"garbage": []byte("nope"), "a certificate": ca.CertPEM(),
		"tampered": []byte(strings.Replace(string(csr), "A", "B", 1)),
	} {
		if _, err := ca.SignAgent(bad, "h", "", t0); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("sign %s: %v, want ErrInvalid", name, err)
		}
	}
}
