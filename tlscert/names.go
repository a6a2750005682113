package tlscert

import (
	"crypto/x509"
	"fmt"
	"strings"

	"roost.dev/roost/errdefs"
)

// CheckDomain reports whether domain can have a certificate for itself and
// its wildcard: a lowercase DNS name of letters, digits and hyphens, labels
// of 1 to 63 characters, at most 253 in all, without a trailing dot.
func CheckDomain(domain string) error {
	if domain == "" || len(domain) > 253 {
		return fmt.Errorf("domain %q: want a DNS name of 1 to 253 characters: %w", domain, errdefs.ErrInvalid)
	}
	for label := range strings.SplitSeq(domain, ".") {
		if !validLabel(label) {
			return fmt.Errorf("domain %q: label %q is not letters, digits and inner hyphens of at most 63 characters, lowercase: %w",
				domain, label, errdefs.ErrInvalid)
		}
	}
	return nil
}

func validLabel(label string) bool {
	if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
		return false
	}
	for _, c := range label {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Names are the DNS names a server certificate for domain lists: the
// domain and its wildcard, which covers api.{domain} and every
// {port}-{sandboxID}.{domain}.
func Names(domain string) []string {
	return []string{domain, "*." + domain}
}

// sampleSandboxHost is a sandbox host name under domain, for checking that
// a certificate covers them all: only the wildcard can.
func sampleSandboxHost(domain string) string {
	return "49983-roostcheck." + domain
}

// Covers reports whether cert is valid for the names clients use in domain
// mode: api.{domain} and {port}-{sandboxID}.{domain}.
func Covers(cert *x509.Certificate, domain string) error {
	for _, host := range []string{"api." + domain, sampleSandboxHost(domain)} {
		if err := cert.VerifyHostname(host); err != nil {
			return fmt.Errorf("certificate for %s does not cover %s (sandbox hosts are {port}-{sandboxID}.%s: it needs *.%s): %w",
				strings.Join(cert.DNSNames, ", "), host, domain, domain, errdefs.ErrInvalid)
		}
	}
	return nil
}
