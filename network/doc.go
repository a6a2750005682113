// Package network gives each sandbox its own network on the host: a named
// network namespace (/run/netns/roost-<id>, so it survives the agent and
// `ip netns exec` works), a veth pair whose host side roost-<slot> is the
// sandbox's gateway, an address from a slot allocator (one /30 per slot),
// outbound NAT, an egress shaper on the sandbox's interface, and the
// firewall in the nftables table `inet roost` (firewall_linux.go).
//
// The policy: a sandbox reaches the public internet, when its internet
// switch is on, and nothing else. Not the host's services on any of its
// addresses, not another sandbox, not a port the host publishes by DNAT,
// and none of BlockedRanges (private, CGNAT, link-local and so cloud
// metadata, loopback, multicast, reserved, documentation, benchmarking)
// unless an operator allows a CIDR (Config.AllowCIDRs,
// --allow-sandbox-cidr). The host reaches every sandbox address (the
// agent's proxy relies on it). Each sandbox may have Config.MaxConns
// connections tracked at once (default 4096) and open Config.NewConnRate
// new ones a second (default 1000), so no sandbox fills the host's
// conntrack table; Teardown drops its entries. Its egress is shaped to
// Config.Egress (default 200 MB/s after a 100 MB burst, as the VM
// runtimes') by a tbf qdisc inside its namespace, which belongs to the
// host's user namespace and so is out of sandbox root's reach. Prune
// removes what a crash left behind.
//
// DNS: sandboxes are given resolvers (runtime.Network.DNS, which the
// drivers write into resolv.conf or pass to the guest) and may reach
// exactly those addresses on port 53, UDP and TCP, even in a blocked range
// or on a host address; by default they are the host's own nameservers
// (not loopback ones; systemd-resolved's upstream list when the host has
// only its stub). No forwarder runs on the host. What a sandbox can
// tunnel through a resolver's recursion (DNS exfiltration) is out of
// scope: it reaches the internet anyway.
//
// Everything goes through netlink (rtnetlink for links, addresses and
// qdiscs, nftables for the firewall, ctnetlink for connection tracking);
// no `ip`, `tc` or `nft` binary is needed.
//
// It does not put processes into the namespace (runtime drivers do), does
// not persist which sandbox has which slot (the agent's state records do;
// Reserve and Prune take it back). IPv4 only: sandboxes have no IPv6
// connectivity, and their IPv6 traffic is never forwarded.
package network
