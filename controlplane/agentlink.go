package controlplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	"roost.dev/roost/store"
	"roost.dev/roost/tlscert"
)

// loadClusterCA returns the agent link's CA, made and stored on the first
// start of any replica (the store keeps it, so replicas on one PostgreSQL
// share it), and the TLS configuration the control plane calls agents
// with. Whoever can read the database can then mint agent credentials;
// whoever can write it already controls the cluster (API key hashes, host
// URLs), so the CA adds no new trust in it.
func loadClusterCA(st store.Store) (*tlscert.ClusterCA, *tls.Config, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	certPEM, keyPEM, err := tlscert.NewClusterCA(time.Now())
	if err != nil {
		return nil, nil, err
	}
	certPEM, keyPEM, err = st.EnsureClusterCA(ctx, certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster CA: %w", err)
	}
	ca, err := tlscert.ParseClusterCA(certPEM, keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster CA in the store: %w", err)
	}
	cfg, err := ca.ClientTLS(time.Now)
	if err != nil {
		return nil, nil, err
	}
	return ca, cfg, nil
}

// ClusterCAFingerprint is the agent link CA's pin, which registration
// tokens carry.
func (s *Server) ClusterCAFingerprint() string { return s.ca.Fingerprint() }

// http1Only is cfg for the proxy's transports, which speak HTTP/1.1 only:
// a copy of its own, since the RPC transport adds "h2" to the ALPN list of
// the configuration it is given, and an agent that picked h2 would then
// get HTTP/1.1 from the proxy.
func http1Only(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	c.NextProtos = []string{"http/1.1"}
	return c
}
