package tlscert

import (
	"crypto/tls"
	"fmt"
	"time"

	"roost.dev/roost/errdefs"
)

// LoadOperator loads an operator's certificate chain and key (PEM files,
// as tls.LoadX509KeyPair reads them) for domain. It refuses a certificate
// that does not cover api.{domain} and the sandbox hosts
// {port}-{sandboxID}.{domain} (a wildcard *.{domain} does), and one that
// is not valid at now: every client would reject either.
func LoadOperator(certFile, keyFile, domain string, now time.Time) (*tls.Certificate, error) {
	if err := CheckDomain(domain); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s with key %s: %w", certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if err := Covers(leaf, domain); err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%s: valid from %s to %s, not now: %w", certFile,
			leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339), errdefs.ErrInvalid)
	}
	return &cert, nil
}
