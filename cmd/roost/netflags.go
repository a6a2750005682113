package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"roost.dev/roost/network"
)

// networkOptions are the sandbox network flags of roost agent and roost up.
type networkOptions struct {
	allowCIDRs []string
	maxConns   int
}

func (o *networkOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&o.allowCIDRs, "allow-sandbox-cidr", nil, "let sandboxes reach this IPv4 CIDR although it is private, link-local, CGNAT or otherwise not public internet (repeatable; e.g. a LAN service at 10.1.2.0/24). It never opens this host's own addresses or other sandboxes")
	f.IntVar(&o.maxConns, "sandbox-max-connections", network.DefaultMaxConns, "connections each sandbox may have open at once through this host (its conntrack entries); new ones beyond are dropped; -1 for no limit")
}

// config is the network.Config the flags describe; vmRuntime turns the
// network's egress limit off, because VM runtimes shape their guests'
// traffic themselves (QEMU with the same tbf, Firecracker with its
// tx_rate_limiter).
func (o *networkOptions) config(vmRuntime bool) (network.Config, error) {
	allow, err := network.ParseCIDRs(o.allowCIDRs)
	if err != nil {
		return network.Config{}, fmt.Errorf("--allow-sandbox-cidr: %w", err)
	}
	if o.maxConns == 0 || o.maxConns < -1 {
		return network.Config{}, fmt.Errorf("--sandbox-max-connections %d: want a positive number, or -1 for no limit", o.maxConns)
	}
	return network.Config{AllowCIDRs: allow, MaxConns: o.maxConns, NoEgressLimit: vmRuntime}, nil
}
