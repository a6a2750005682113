package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"sync"
	"time"
)

// Issue makes a server certificate for the CA's domain and its wildcard,
// valid from now (backdated by an hour for clients whose clocks lag) for
// 397 days or until the CA expires, with a key of its own. The chain holds
// the CA's certificate too.
func (ca *CA) Issue(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	notAfter := now.Add(serverValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: ca.domain, Organization: []string{"roost"}},
		DNSNames:     Names(ca.domain),
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// Issuer serves the CA's server certificate to TLS handshakes and reissues
// it once two thirds of its validity have passed, so a server that runs
// for years never presents an expired one. It is safe for concurrent use.
type Issuer struct {
	ca  *CA
	now func() time.Time

	mu   sync.Mutex // guards cert
	cert *tls.Certificate
}

// NewIssuer issues the first certificate at once, so that a failure shows
// at start-up. now is the clock (time.Now outside tests).
func (ca *CA) NewIssuer(now func() time.Time) (*Issuer, error) {
	cert, err := ca.Issue(now())
	if err != nil {
		return nil, err
	}
	return &Issuer{ca: ca, now: now, cert: cert}, nil
}

// GetCertificate is for tls.Config.GetCertificate. A reissue that fails
// keeps serving the current certificate, which is still valid for a third
// of its life.
func (i *Issuer) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	leaf := i.cert.Leaf
	if now.Before(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)) {
		return i.cert, nil
	}
	if cert, err := i.ca.Issue(now); err == nil {
		i.cert = cert
	}
	return i.cert, nil
}
