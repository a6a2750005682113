package tlscert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
)

const domain = "roost.test"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestCheckDomain(t *testing.T) {
	for d, ok := range map[string]bool{
		"roost.test": true, "localhost": true, "a-b.example.com": true, "x1.y2": true,
		"": false, "Roost.test": false, "*.roost.test": false, "roost.test.": false, ".roost.test": false,
		"-a.test": false, "a-.test": false, "a..test": false, "a_b.test": false, "roost.test:443": false,
		strings.Repeat("a", 64) + ".test": false,
	} {
		err := CheckDomain(d)
		if (err == nil) != ok {
			t.Errorf("CheckDomain(%q) = %v, want ok %v", d, err, ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("CheckDomain(%q) = %v, not ErrInvalid", d, err)
		}
	}
}

// verify checks cert against the CA's certificate as the only root.
func verify(ca *CA, cert *tls.Certificate, host string, at time.Time) error {
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	_, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: at})
	return err
}

func TestCAIssuesCertificateForDomainAndWildcard(t *testing.T) {
	ca, created, err := LoadOrCreateCA(t.TempDir(), domain, t0)
	if err != nil || !created {
		t.Fatalf("LoadOrCreateCA = %v, created %v", err, created)
	}
	cert, err := ca.Issue(t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{domain, "api." + domain, "49983-i1abc2def3.roost.test", "8080-x.roost.test"} {
		if err := verify(ca, cert, host, t0); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	for _, host := range []string{"example.com", "a.b.roost.test", "roost.testx"} {
		if err := verify(ca, cert, host, t0); err == nil {
			t.Errorf("%s verified", host)
		}
	}
	if err := verify(ca, cert, "api."+domain, t0.Add(398*24*time.Hour)); err == nil {
		t.Error("verified after 398 days")
	}
	if len(cert.Certificate) != 2 {
		t.Errorf("chain has %d certificates, want server and CA", len(cert.Certificate))
	}
}

// TestCAVouchesForItsDomainOnly signs other names with the CA's key
// directly: its name constraints make every client refuse them.
func TestCAVouchesForItsDomainOnly(t *testing.T) {
	ca, _, err := LoadOrCreateCA(t.TempDir(), domain, t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, names := range [][]string{{"bank.example"}, {"api.roost.test", "bank.example"}, {"roost.test.evil.example"}} {
		cert := signWith(t, ca.cert, ca.key, names, t0, t0.Add(time.Hour))
		if err := verify(ca, cert, names[0], t0); err == nil {
			t.Errorf("a certificate for %v verified", names)
		}
	}
}

func TestCAIsReusedAndKeyPrivate(t *testing.T) {
	dir := t.TempDir()
	first, _, err := LoadOrCreateCA(dir, domain, t0)
	if err != nil {
		t.Fatal(err)
	}
	again, created, err := LoadOrCreateCA(dir, domain, t0.Add(24*time.Hour))
	if err != nil || created {
		t.Fatalf("second LoadOrCreateCA = %v, created %v", err, created)
	}
	if !again.Certificate().Equal(first.Certificate()) || again.CertFile != filepath.Join(dir, CertFileName) {
		t.Error("a second start made another CA")
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFileName))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key: %v, mode %v", err, fi.Mode())
	}
	cert, err := again.Issue(t0)
	if err != nil || verify(first, cert, "api."+domain, t0) != nil {
		t.Errorf("the reloaded CA's certificate does not verify against the first: %v", err)
	}
}

func TestCARefusals(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreateCA(dir, domain, t0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir, "other.test", t0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("CA of roost.test loaded for other.test: %v", err)
	}
	if _, _, err := LoadOrCreateCA(dir, domain, t0.Add(11*365*24*time.Hour)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("expired CA loaded: %v", err)
	}
	if _, _, err := LoadOrCreateCA(t.TempDir(), "Bad_Domain", t0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("bad domain: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, KeyFileName)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir, domain, t0); err == nil {
		t.Error("a CA certificate without its key loaded")
	}
}

func TestCAKeyWithoutCertificateIsReplaced(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreateCA(dir, domain, t0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, CertFileName)); err != nil {
		t.Fatal(err)
	}
	if _, created, err := LoadOrCreateCA(dir, domain, t0); err != nil || !created {
		t.Errorf("after an interrupted creation: %v, created %v", err, created)
	}
}

func TestIssuerRenewsBeforeExpiry(t *testing.T) {
	ca, _, err := LoadOrCreateCA(t.TempDir(), domain, t0)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	iss, err := ca.NewIssuer(func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	first, _ := iss.GetCertificate(nil)
	now = t0.Add(200 * 24 * time.Hour)
	if same, _ := iss.GetCertificate(nil); same != first {
		t.Error("reissued half-way through its validity")
	}
	now = t0.Add(300 * 24 * time.Hour)
	renewed, _ := iss.GetCertificate(nil)
	if renewed == first {
		t.Fatal("not reissued with a third of its validity left")
	}
	if err := verify(ca, renewed, "api."+domain, t0.Add(500*24*time.Hour)); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
}

func TestLoadOperator(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, names []string, notBefore, notAfter time.Time) string {
		tmpl := template(names, notBefore, notAfter)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pemBlock("CERTIFICATE", der), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(keyFile, pemBlock("PRIVATE KEY", keyDER), 0o600); err != nil {
		t.Fatal(err)
	}
	good := write("wildcard.pem", []string{"*.roost.test"}, t0.Add(-time.Hour), t0.Add(time.Hour))
	if _, err := LoadOperator(good, keyFile, domain, t0); err != nil {
		t.Errorf("wildcard certificate refused: %v", err)
	}
	if _, err := LoadOperator(good, keyFile, "other.test", t0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("*.roost.test accepted for other.test: %v", err)
	}
	apiOnly := write("api.pem", []string{"api.roost.test", "roost.test"}, t0.Add(-time.Hour), t0.Add(time.Hour))
	if _, err := LoadOperator(apiOnly, keyFile, domain, t0); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a certificate without the wildcard accepted: %v", err)
	}
	if _, err := LoadOperator(good, keyFile, domain, t0.Add(2*time.Hour)); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("expired certificate accepted: %v", err)
	}
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherDER, _ := x509.MarshalPKCS8PrivateKey(otherKey)
	otherKeyFile := filepath.Join(dir, "other-key.pem")
	if err := os.WriteFile(otherKeyFile, pemBlock("PRIVATE KEY", otherDER), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOperator(good, otherKeyFile, domain, t0); err == nil {
		t.Error("a key that does not match accepted")
	}
	if _, err := LoadOperator(filepath.Join(dir, "missing.pem"), keyFile, domain, t0); err == nil {
		t.Error("a missing certificate file accepted")
	}
}

func template(names []string, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serialNumber(), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
}

// signWith makes a certificate for names signed by parent's key.
func signWith(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, names []string, notBefore, notAfter time.Time) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, template(names, notBefore, notAfter), parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
