package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"roost.dev/roost/client"
	"roost.dev/roost/controlplane"
)

// The operator's token: $ROOST_ADMIN_TOKEN, else the file roost up and
// roost server keep in their data directory.
const (
	adminTokenEnv  = "ROOST_ADMIN_TOKEN"
	adminTokenFile = "admin-token"
)

// ensureCredential returns a credential kept the way the API key and the
// operator's token are: from $env, else from the data directory's file,
// else made (created) and written there (mode 0600). One from the
// environment or the file is added to the store (add) in case the
// database is new.
func ensureCredential(ctx context.Context, dataDir, file, env, what string,
	create func(context.Context) (string, error), add func(context.Context, string) error) (apiKey, error) {
	path := filepath.Join(dataDir, file)
	k := apiKey{value: os.Getenv(env)}
	if k.value == "" {
		k.file = path
		if b, err := os.ReadFile(path); err == nil {
			k.value = strings.TrimSpace(string(b))
		}
	}
	if k.value == "" {
		v, err := create(ctx)
		if err != nil {
			return apiKey{}, err
		}
		if err := os.WriteFile(path, []byte(v+"\n"), 0o600); err != nil {
			return apiKey{}, fmt.Errorf("store %s: %w", what, err)
		}
		return apiKey{value: v, created: true, file: path}, nil
	}
	if err := add(ctx, k.value); err != nil {
		return apiKey{}, fmt.Errorf("%s from $%s or %s: %w", what, env, path, err)
	}
	return k, nil
}

// ensureCredentials returns what a start of roost up or roost server
// hands out: the API key and the operator's token.
func ensureCredentials(ctx context.Context, cp *controlplane.Server, dataDir string) (key, admin apiKey, err error) {
	if key, err = ensureAPIKey(ctx, cp, dataDir); err != nil {
		return key, admin, err
	}
	admin, err = ensureAdminToken(ctx, cp, dataDir)
	return key, admin, err
}

// ensureAdminToken returns the operator's token: see ensureCredential.
func ensureAdminToken(ctx context.Context, cp *controlplane.Server, dataDir string) (apiKey, error) {
	return ensureCredential(ctx, dataDir, adminTokenFile, adminTokenEnv, "admin token",
		func(ctx context.Context) (string, error) { return cp.CreateAdminToken(ctx, "operator") },
		cp.AddAdminToken)
}

// printOperator says where the operator's token is, printing it only on
// the start that made it.
func printOperator(w io.Writer, tok apiKey) {
	switch {
	case tok.created:
		fmt.Fprintf(w, "An operator token (teams, quotas, the whole audit log: roost team --help) was made and stored in %s (mode 0600). It is shown this once:\n\n  %s\n\n", tok.file, tok.value)
	case tok.file != "":
		fmt.Fprintf(w, "The operator token is kept in %s (mode 0600): roost team --help.\n\n", tok.file)
	default:
		fmt.Fprintf(w, "The operator token is the one in $%s: roost team --help.\n\n", adminTokenEnv)
	}
}

// operatorClient reads ROOST_API_URL and ROOST_ADMIN_TOKEN; without a
// token it falls back to the one roost up keeps in its default data
// directory.
func operatorClient() (*client.Client, error) {
	base := os.Getenv(apiURLEnv)
	if base == "" {
		base = defaultAPIURL
	}
	tok := os.Getenv(adminTokenEnv)
	if tok == "" {
		b, err := os.ReadFile(filepath.Join("/var/lib/roost", adminTokenFile))
		if err != nil {
			return nil, fmt.Errorf("no operator token: set $%s (roost up and roost server print it at their first start)", adminTokenEnv)
		}
		tok = strings.TrimSpace(string(b))
	}
	return client.NewOperator(base, tok), nil
}

// operationOptions are the flags of the audit log, events and webhooks,
// on roost server and roost up.
type operationOptions struct {
	auditRetention, eventRetention, webhookRetryFor time.Duration
	webhookAllow                                    []string
}

func (o *operationOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&o.auditRetention, "audit-retention", 90*24*time.Hour, "how long audit log entries are kept")
	f.DurationVar(&o.eventRetention, "event-retention", 7*24*time.Hour, "how long sandbox lifecycle events (and webhook deliveries) are kept; team metrics reach back as far")
	f.DurationVar(&o.webhookRetryFor, "webhook-retry-for", time.Hour, "how long after its event a failing webhook delivery is retried")
	f.StringSliceVar(&o.webhookAllow, "webhook-allow-cidr", nil,
		"a private, loopback or this host's range (CIDR) that webhooks may reach, refused by default; may be repeated")
}

// apply sets the options on cfg; a malformed CIDR or a non-positive
// duration is an error.
func (o *operationOptions) apply(cfg *controlplane.Config) error {
	for _, d := range []time.Duration{o.auditRetention, o.eventRetention, o.webhookRetryFor} {
		if d <= 0 {
			return fmt.Errorf("--audit-retention, --event-retention and --webhook-retry-for must be positive")
		}
	}
	cfg.AuditRetention, cfg.EventRetention, cfg.WebhookRetryFor = o.auditRetention, o.eventRetention, o.webhookRetryFor
	for _, c := range o.webhookAllow {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return fmt.Errorf("--webhook-allow-cidr %q: %w", c, err)
		}
		cfg.WebhookAllowCIDRs = append(cfg.WebhookAllowCIDRs, p.Masked())
	}
	return nil
}
