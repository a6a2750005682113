package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"roost.dev/roost/atomicfile"
	"roost.dev/roost/errdefs"
)

const (
	// CertFileName and KeyFileName are the CA's files in its directory.
	CertFileName = "ca.pem"
	KeyFileName  = "ca-key.pem"

	caValidity = 10 * 365 * 24 * time.Hour
	// serverValidity is the longest validity clients accept of a server
	// certificate (Apple's and browsers' 398-day limit, with a day spare).
	serverValidity = 397 * 24 * time.Hour
	// clockSkew backdates certificates, so that a client whose clock is a
	// little behind still accepts a fresh one.
	clockSkew = time.Hour
)

// CA is a private certificate authority for one domain, kept as two PEM
// files (CertFileName, KeyFileName) in a directory. It is immutable and
// safe for concurrent use.
type CA struct {
	// CertFile is the CA certificate's path: the file clients trust.
	CertFile string
	domain   string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
}

// LoadOrCreateCA returns domain's CA kept in dir, or makes one there
// (created reports that) when dir holds none. A key without its
// certificate (an interrupted creation) is replaced; a certificate without
// its key, a CA made for another domain, or an expired one is an error,
// since silently replacing it would break every client that trusts it.
func LoadOrCreateCA(dir, domain string, now time.Time) (ca *CA, created bool, err error) {
	if err := CheckDomain(domain); err != nil {
		return nil, false, err
	}
	certFile, keyFile := filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName)
	certPEM, err := os.ReadFile(certFile)
	if errors.Is(err, fs.ErrNotExist) {
		ca, err = createCA(dir, domain, now)
		return ca, err == nil, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("read CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, false, fmt.Errorf("read CA key (remove %s to make a new CA, which clients must then trust instead): %w", dir, err)
	}
	ca, err = parseCA(certFile, domain, certPEM, keyPEM)
	if err != nil {
		return nil, false, err
	}
	if err := ca.check(domain, now); err != nil {
		return nil, false, fmt.Errorf("CA in %s (remove the directory to make a new one, which clients must then trust instead): %w", dir, err)
	}
	return ca, false, nil
}

// createCA makes a CA for domain and writes it to dir: the key first, so
// that a certificate on disk always has its key.
func createCA(dir, domain string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "roost private CA for " + domain, Organization: []string{"roost"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// The CA vouches for domain and its subdomains, and nothing else.
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{domain},
		ExcludedIPRanges: []*net.IPNet{
			{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	certFile := filepath.Join(dir, CertFileName)
	if err := atomicfile.Write(filepath.Join(dir, KeyFileName), pemBlock("PRIVATE KEY", keyDER), 0o600); err != nil {
		return nil, fmt.Errorf("write CA key: %w", err)
	}
	if err := atomicfile.Write(certFile, pemBlock("CERTIFICATE", der), 0o644); err != nil {
		return nil, fmt.Errorf("write CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return &CA{CertFile: certFile, domain: domain, cert: cert, key: key}, nil
}

func parseCA(certFile, domain string, certPEM, keyPEM []byte) (*CA, error) {
	certDER, err := pemBytes(certPEM, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certFile, err)
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certFile, err)
	}
	keyDER, err := pemBytes(keyPEM, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	parsed, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key does not belong to %s: %w", certFile, errdefs.ErrInvalid)
	}
	return &CA{CertFile: certFile, domain: domain, cert: cert, key: key}, nil
}

// check reports whether a loaded CA is one of ours for domain, valid now.
func (ca *CA) check(domain string, now time.Time) error {
	if !ca.cert.IsCA || !slices.Equal(ca.cert.PermittedDNSDomains, []string{domain}) {
		return fmt.Errorf("not roost's CA for %s (it is limited to %v): %w", domain, ca.cert.PermittedDNSDomains, errdefs.ErrInvalid)
	}
	if now.After(ca.cert.NotAfter) {
		return fmt.Errorf("expired on %s: %w", ca.cert.NotAfter.Format(time.DateOnly), errdefs.ErrInvalid)
	}
	return nil
}

// Domain is the domain the CA vouches for.
func (ca *CA) Domain() string { return ca.domain }

// Certificate is the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

func serialNumber() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // crypto/rand does not fail on Linux
	}
	return n.Add(n, big.NewInt(1))
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

// pemBytes is the first PEM block of kind in data.
func pemBytes(data []byte, kind string) ([]byte, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("no PEM %s block: %w", kind, errdefs.ErrInvalid)
		}
		if block.Type == kind {
			return block.Bytes, nil
		}
	}
}
