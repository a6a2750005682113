// Package tlscert provides the certificate the control plane serves TLS
// with in domain mode, where clients reach the API at api.{domain} and
// sandboxes at {port}-{sandboxID}.{domain}: one certificate must cover
// the domain's wildcard.
//
// Two sources: a private CA that roost makes and keeps in a directory of
// the data dir (LoadOrCreateCA), which signs a server certificate for the
// domain and its wildcard (CA.Issuer); or an operator's certificate and key
// (LoadOperator), which must cover the wildcard, or roost refuses it at
// start-up rather than serve one every client rejects.
//
// The private CA is limited by X.509 name constraints to its domain and
// the domain's subdomains, and to no IP address: a client told to trust it
// (NODE_EXTRA_CA_CERTS, SSL_CERT_FILE) trusts it for those names only, so
// its key, which lives on the server, cannot vouch for any other site.
// Each domain has a CA of its own for that reason. The CA is made once and
// reused on every start (clients keep trusting the same file); the server
// certificate it signs is kept in memory only and reissued when it nears
// the end of its validity.
//
// ClusterCA is a separate authority, for the link between the control
// plane and its agents (mutual TLS): it lives in the control plane's
// store, signs each agent's certificate request at registration (server
// use only, for the host ID and advertised address) and the control
// plane's own client certificate (client use only, ControlPlaneName), and
// is pinned by its fingerprint in registration tokens. Neither end trusts
// it for anything else, so it has no name constraints.
//
// The package does not listen or serve, and does not decide which source
// a command line asks for (cmd/roost does).
package tlscert
