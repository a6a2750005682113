package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"roost.dev/roost/tlscert"
)

// domainFlagUsage and domainModeHelp describe --domain and the TLS flags
// for roost up and roost server.
const (
	domainFlagUsage = "domain of the API (api.{domain}, with --tls) and of sandbox hosts ({port}-{sandboxID}.{domain})"
	domainModeHelp  = `Domain mode: with --domain D --tls and --listen on port 443 (e.g.
127.0.0.1:443), the API answers at https://api.D and sandboxes at
https://{port}-{sandboxID}.D, so E2B's SDKs need nothing but E2B_DOMAIN=D and
E2B_API_KEY (names under D must resolve to this machine). --tls makes a
private CA in <data-dir>/tls/D/ (once; reused on restart) that vouches for D
and its subdomains only, and prints the variables that make Node, Python and
curl trust it. --tls-cert/--tls-key serve an operator's certificate instead:
it must cover *.D, or roost refuses to start.`
)

// tlsOptions are the TLS flags roost up and roost server share.
type tlsOptions struct {
	enabled  bool
	certFile string
	keyFile  string
}

func (o *tlsOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&o.enabled, "tls", false, "serve HTTPS for --domain: api.{domain} and {port}-{sandboxID}.{domain}, with a certificate from a private CA that roost makes in <data-dir>/tls/{domain}/ (or --tls-cert)")
	f.StringVar(&o.certFile, "tls-cert", "", "PEM certificate (chain) covering *.{domain}, instead of the private CA's; implies --tls; needs --tls-key")
	f.StringVar(&o.keyFile, "tls-key", "", "PEM private key of --tls-cert")
}

// serving is how the control plane is reached, as the TLS flags resolve.
type serving struct {
	// tls is nil for plain HTTP.
	tls *tls.Config
	// publicURL is the API's URL: http://{listen}, or https://api.{domain}
	// with the listen port unless it is 443 (https://localhost:{port} for
	// the domain localhost, which has no api. name that resolves).
	publicURL string
	// domain is the normalised --domain.
	domain string
	// caFile is the private CA's certificate, when roost made the server's.
	caFile string
	// caCreated says the CA was made by this start.
	caCreated bool
	// domainMode says E2B_DOMAIN alone reaches the server: HTTPS on port
	// 443 for a domain other than localhost.
	domainMode bool
}

// resolve checks the TLS flags against domain and listen and loads or
// makes the certificate. Combinations that cannot work are refused.
func (o *tlsOptions) resolve(dataDir, domain, listen string, now time.Time) (*serving, error) {
	domain = strings.Trim(strings.ToLower(domain), ".")
	if (o.certFile == "") != (o.keyFile == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together: give both, or neither for roost's private CA")
	}
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: want host:port: %w", listen, err)
	}
	if !o.enabled && o.certFile == "" {
		return &serving{publicURL: "http://" + listen, domain: domain}, nil
	}
	if err := tlscert.CheckDomain(domain); err != nil {
		return nil, fmt.Errorf("--domain: %w", err)
	}
	s := &serving{domain: domain, publicURL: httpsURL(domain, port), domainMode: port == "443" && domain != "localhost"}
	var cfg tls.Config
	if o.certFile != "" {
		cert, err := tlscert.LoadOperator(o.certFile, o.keyFile, domain, now)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
		cfg.Certificates = []tls.Certificate{*cert}
	} else {
		ca, created, err := tlscert.LoadOrCreateCA(filepath.Join(dataDir, "tls", domain), domain, now)
		if err != nil {
			return nil, fmt.Errorf("private CA: %w", err)
		}
		issuer, err := ca.NewIssuer(time.Now)
		if err != nil {
			return nil, err
		}
		cfg.GetCertificate = issuer.GetCertificate
		s.caFile, s.caCreated = ca.CertFile, created
	}
	cfg.MinVersion = tls.VersionTLS12
	s.tls = &cfg
	return s, nil
}

// httpsURL is the API's URL in domain mode.
func httpsURL(domain, port string) string {
	host := "api." + domain
	if domain == "localhost" {
		host = domain
	}
	if port != "443" {
		host = net.JoinHostPort(host, port)
	}
	return "https://" + host
}

// printTrust says where the private CA is and how clients trust it.
func printTrust(w io.Writer, s *serving) {
	if s.caFile == "" {
		return
	}
	made := "kept"
	if s.caCreated {
		made = "made"
	}
	fmt.Fprintf(w, "TLS: roost's private CA for %s (and its subdomains only) was %s in\n\n  %s\n\n", s.domain, made, s.caFile)
	fmt.Fprintf(w, "Make clients trust it (SSL_CERT_FILE replaces the system's CAs for Python and Go programs):\n\n"+
		"  export NODE_EXTRA_CA_CERTS=%[1]s\n  export SSL_CERT_FILE=%[1]s\n  export REQUESTS_CA_BUNDLE=%[1]s\n"+
		"  curl --cacert %[1]s %[2]s/health\n\n", s.caFile, s.publicURL)
}
