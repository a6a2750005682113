package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"roost.dev/roost/errdefs"
)

const (
	// ControlPlaneName is the name in the control plane's client
	// certificate; agents accept calls from that name only, so an agent's
	// own certificate (same CA) cannot call another agent.
	ControlPlaneName = "roost-control-plane"
	// clientValidity is how long a control-plane client certificate
	// lasts; each replica issues its own in memory and renews it.
	clientValidity = 30 * 24 * time.Hour
	// FingerprintPrefix starts a fingerprint: "sha256:" and 64 hex digits.
	FingerprintPrefix = "sha256:"
)

// ClusterCA is the control plane's certificate authority for the agent
// link. It signs each agent's serving certificate at registration and the
// control plane's client certificate. It is trusted only by the two ends
// of that link (never installed as a system root), so it carries no name
// constraints: agents are reached at any address. Safe for concurrent use.
type ClusterCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// NewClusterCA makes a cluster CA valid for ten years from now and returns
// it as PEM (certificate, PKCS#8 key).
func NewClusterCA(now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(),
		Subject:               pkix.Name{CommonName: "roost cluster CA", Organization: []string{"roost"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster CA key: %w", err)
	}
	return pemBlock("CERTIFICATE", der), pemBlock("PRIVATE KEY", keyDER), nil
}

// ParseClusterCA loads a cluster CA from the PEM NewClusterCA made.
func ParseClusterCA(certPEM, keyPEM []byte) (*ClusterCA, error) {
	ca, err := parseCA("cluster CA", "", certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if !ca.cert.IsCA {
		return nil, fmt.Errorf("cluster CA: not a CA certificate: %w", errdefs.ErrInvalid)
	}
	return &ClusterCA{cert: ca.cert, key: ca.key, certPEM: pemBlock("CERTIFICATE", ca.cert.Raw)}, nil
}

// CertPEM is the CA certificate, the file agents trust.
func (ca *ClusterCA) CertPEM() []byte { return ca.certPEM }

// Fingerprint is the CA certificate's pin, carried in registration tokens.
func (ca *ClusterCA) Fingerprint() string { return Fingerprint(ca.cert) }

// Pool is a pool holding only the CA.
func (ca *ClusterCA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Fingerprint is "sha256:" and the hex SHA-256 of cert's DER encoding.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return FingerprintPrefix + hex.EncodeToString(sum[:])
}

// CheckFingerprint reports whether fp is a well-formed fingerprint.
func CheckFingerprint(fp string) error {
	h, ok := strings.CutPrefix(fp, FingerprintPrefix)
	if b, err := hex.DecodeString(h); !ok || err != nil || len(b) != sha256.Size || h != strings.ToLower(h) {
		return fmt.Errorf("CA fingerprint %q: want sha256: and 64 lowercase hex digits: %w", fp, errdefs.ErrInvalid)
	}
	return nil
}

// SignAgent signs an agent's certificate request. The certificate names
// the host ID and the host of its advertised address (an IP or a DNS
// name), and serves only (no client use: an agent cannot call another
// agent with it). It is valid until the CA expires; an agent renews it by
// registering again.
func (ca *ClusterCA) SignAgent(csrPEM []byte, hostID, addrHost string, now time.Time) ([]byte, error) {
	der, err := pemBytes(csrPEM, "CERTIFICATE REQUEST")
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %v: %w", err, errdefs.ErrInvalid)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %v: %w", err, errdefs.ErrInvalid)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("certificate request: ECDSA key on P-256 or P-384 wanted: %w", errdefs.ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("certificate request: ECDSA key wanted, got %T: %w", csr.PublicKey, errdefs.ErrInvalid)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: hostID, Organization: []string{"roost agent"}},
		DNSNames:     []string{hostID},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     ca.cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if a, err := netip.ParseAddr(addrHost); err == nil {
		tmpl.IPAddresses = []net.IP{a.AsSlice()}
	} else if addrHost != "" && addrHost != hostID {
		tmpl.DNSNames = append(tmpl.DNSNames, addrHost)
	}
	out, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("agent certificate: %w", err)
	}
	return pemBlock("CERTIFICATE", out), nil
}

// issueClient makes a control-plane client certificate.
func (ca *ClusterCA) issueClient(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("client key: %w", err)
	}
	notAfter := now.Add(clientValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: ControlPlaneName, Organization: []string{"roost"}},
		DNSNames:     []string{ControlPlaneName},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ClientTLS is the control plane's TLS configuration for calling agents:
// it presents a client certificate of the CA (issued in memory, renewed
// after two thirds of its life) and trusts agents certified by the CA
// only. now is the clock (time.Now outside tests).
func (ca *ClusterCA) ClientTLS(now func() time.Time) (*tls.Config, error) {
	cert, err := ca.issueClient(now())
	if err != nil {
		return nil, err
	}
	r := &renewer{ca: ca, now: now, cert: cert}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              ca.Pool(),
		GetClientCertificate: r.get,
	}, nil
}

// renewer holds the current client certificate.
type renewer struct {
	ca  *ClusterCA
	now func() time.Time

	mu   sync.Mutex // guards cert
	cert *tls.Certificate
}

func (r *renewer) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	leaf := r.cert.Leaf
	if now.After(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)) {
		if cert, err := r.ca.issueClient(now); err == nil {
			r.cert = cert
		}
	}
	return r.cert, nil
}

// NewAgentKey makes an agent's key and a certificate request for it, both
// PEM. The control plane decides the certificate's names, so the request
// carries none.
func NewAgentKey() (keyPEM, csrPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("agent key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "roost agent"},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certificate request: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("agent key: %w", err)
	}
	return pemBlock("PRIVATE KEY", keyDER), pemBlock("CERTIFICATE REQUEST", csr), nil
}

// CheckAgentCertificate is the agent's check of what registration
// returned: caPEM must be the CA pinned by fingerprint, and certPEM a
// certificate of that CA for keyPEM's key. It returns the agent's TLS
// server configuration.
func CheckAgentCertificate(certPEM, keyPEM, caPEM []byte, fingerprint string, now time.Time) (*tls.Config, error) {
	caDER, err := pemBytes(caPEM, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %v: %w", err, errdefs.ErrInvalid)
	}
	if got := Fingerprint(caCert); got != fingerprint {
		return nil, fmt.Errorf("the control plane's CA is %s, not %s as pinned (by the registration token): refusing it: %w",
			got, fingerprint, errdefs.ErrInvalid)
	}
	return AgentServerTLS(certPEM, keyPEM, caPEM, now)
}

// AgentServerTLS is an agent's TLS server configuration: it serves its
// certificate and requires a client certificate of the cluster CA naming
// the control plane (ControlPlaneName).
func AgentServerTLS(certPEM, keyPEM, caPEM []byte, now time.Time) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("agent certificate: %v: %w", err, errdefs.ErrInvalid)
	}
	caDER, err := pemBytes(caPEM, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %v: %w", err, errdefs.ErrInvalid)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{
		Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, fmt.Errorf("agent certificate is not the cluster CA's: %v: %w", err, errdefs.ErrInvalid)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		// The chain is verified (ExtKeyUsageClientAuth included) before
		// this runs; the name keeps agents' own certificates out.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !slices.Contains(cs.PeerCertificates[0].DNSNames, ControlPlaneName) {
				return fmt.Errorf("client certificate is not the control plane's")
			}
			return nil
		},
	}, nil
}
