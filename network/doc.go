// Package network gives each sandbox its own network on the host: a named
// network namespace (/run/netns/roost-<id>, so it survives the agent and
// `ip netns exec` works), a veth pair whose host side roost-<slot> is the
// sandbox's gateway, an address from a slot allocator (one /30 per slot),
// outbound NAT, and isolation rules in the nftables table `inet roost`:
// a sandbox cannot reach the host's services or another sandbox, cannot
// reach link-local addresses (cloud metadata), and with internet off
// cannot reach anything beyond the host. The host reaches every sandbox
// address (the agent's proxy relies on it). Prune removes what a crash
// left behind.
//
// Everything goes through netlink (rtnetlink for links and addresses,
// nftables for the firewall); no `ip` or `nft` binary is needed.
//
// It does not put processes into the namespace (runtime drivers do), does
// not persist which sandbox has which slot (the agent's state records do;
// Reserve and Prune take it back), and does not provide DNS: the host's
// services, a local resolver included, are unreachable from sandboxes, so
// sandboxes need resolvers beyond the host. IPv4 only: sandboxes have no
// IPv6 connectivity, and their IPv6 traffic is never forwarded.
package network
