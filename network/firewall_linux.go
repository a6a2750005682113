package network

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The firewall is one nftables table, `inet roost`. Sandbox traffic is
// recognised by the host-side interface it arrives on (`roost-*`); the
// sandbox's source address is trusted only after the prerouting chain has
// checked it is the one address that interface owns, so a sandbox that
// re-addresses its eth0 cannot escape no_internet or share another
// sandbox's limits.
//
// The policy: a sandbox reaches the public internet (when its switch is
// on) and nothing else. Not the host (any of its addresses, on any
// interface: those are input, where only replies and DNS to a resolver
// pass), not another sandbox, not a port the host publishes by DNAT
// (Docker's), and none of the blocked ranges (private, CGNAT, link-local,
// loopback, multicast, reserved, documentation: BlockedRanges) unless
// the operator allowed the destination or it is one of the sandboxes'
// DNS resolvers on port 53. Each sandbox's tracked connections and its
// rate of new ones are bounded, so that one sandbox cannot fill the
// host's conntrack table.
//
//	prerouting (raw): roost-* with a source that is not a .2 address, or
//	                  not routed back through the interface it came in on → drop
//	input:            roost-* established/related → accept;
//	                  roost-* online → @resolvers udp/tcp 53 → accept; roost-* → drop
//	forward:          roost-* → roost-* drop; roost-* or → roost-* non-IPv4 drop;
//	                  roost-* → jump sandbox_out;
//	                  → roost-* established/related accept; → roost-* drop
//	sandbox_out:      from @no_internet drop; DNATed drop;
//	                  to @blocked and not @allowed → jump private;
//	                  new: over @conns' count drop; over @new_conns' rate drop;
//	                  accept
//	private:          to @resolvers udp/tcp 53 → return; drop
//	postrouting(nat): from the subnet out of a non-roost-* interface → masquerade
//
// Every set is a lookup of constant cost: the blocked and allowed ranges
// are interval sets, and nothing is added per sandbox except its address
// in no_internet (internet off) and, on its first new connection, its
// elements of the two dynamic sets. Other tables still see the traffic: a
// host firewall whose forward policy is drop (Docker's, for one) also
// drops sandbox egress.
const (
	tableName = "roost"

	noInternetSet = "no_internet"
	blockedSet    = "blocked"
	allowedSet    = "allowed"
	resolversSet  = "resolvers"
	connsSet      = "conns"
	newConnsSet   = "new_conns"

	egressChain  = "sandbox_out"
	privateChain = "private"

	// maxDynamicElems caps the per-sandbox dynamic sets: one element per
	// sandbox address that ever opened a connection. Slots are reused
	// lowest first, so this is the most sandboxes a host runs at once.
	maxDynamicElems = 65535
)

var roostTable = &nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}

// Set IDs within the install batch; they avoid the library's global counter.
var (
	noInternet = &nftables.Set{Table: roostTable, ID: 1, Name: noInternetSet, KeyType: nftables.TypeIPAddr}
	resolvers  = &nftables.Set{Table: roostTable, ID: 2, Name: resolversSet, KeyType: nftables.TypeIPAddr}
)

// policy is what installTable enforces, with Config's defaults applied.
type policy struct {
	subnet    netip.Prefix
	allowed   []addrRange
	resolvers []netip.Addr
	maxConns  int // 0: no limit
	connRate  int // new connections a second; 0: no limit
}

// installTable replaces `inet roost` in one atomic batch, keeping the
// elements of an existing no_internet set so that sandboxes that outlive
// an agent restart never get internet access in between; Prune later drops
// the elements that belong to no sandbox.
func installTable(p policy) (kept int, err error) {
	c, err := nftables.New()
	if err != nil {
		return 0, fmt.Errorf("nftables: %w", err)
	}
	var elems []nftables.SetElement
	if _, err := c.ListTableOfFamily(tableName, nftables.TableFamilyINet); err == nil {
		if old, err := c.GetSetByName(roostTable, noInternetSet); err == nil {
			// A failure here only loses state Prune and SetInternet restore.
			elems, _ = c.GetSetElements(old)
		}
	}

	// Adding first makes the delete succeed whether or not the table exists.
	c.AddTable(roostTable)
	c.DelTable(roostTable)
	c.AddTable(roostTable)
	sets, err := addSets(c, p, elems)
	if err != nil {
		return 0, err
	}
	addChains(c, p, sets)
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("install nftables table inet %s: %w", tableName, err)
	}
	return len(elems), nil
}

type tableSets struct {
	noInternet, blocked, allowed, resolvers, conns, newConns *nftables.Set
}

func addSets(c *nftables.Conn, p policy, noInternetElems []nftables.SetElement) (tableSets, error) {
	interval := func(id uint32, name string) *nftables.Set {
		return &nftables.Set{Table: roostTable, ID: id, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
	}
	dynamic := func(id uint32, name string) *nftables.Set {
		return &nftables.Set{Table: roostTable, ID: id, Name: name, KeyType: nftables.TypeIPAddr, Dynamic: true, Size: maxDynamicElems}
	}
	ni, rs := *noInternet, *resolvers
	s := tableSets{
		noInternet: &ni, resolvers: &rs,
		blocked: interval(3, blockedSet), allowed: interval(4, allowedSet),
		conns: dynamic(5, connsSet), newConns: dynamic(6, newConnsSet),
	}
	for _, add := range []struct {
		set   *nftables.Set
		elems []nftables.SetElement
	}{
		{s.noInternet, noInternetElems},
		{s.resolvers, addrElements(p.resolvers)},
		{s.blocked, rangeElements(mergeRanges(BlockedRanges))},
		{s.allowed, rangeElements(p.allowed)},
		{s.conns, nil},
		{s.newConns, nil},
	} {
		if err := c.AddSet(add.set, add.elems); err != nil {
			return s, fmt.Errorf("nftables set %s: %w", add.set.Name, err)
		}
	}
	return s, nil
}

func addChains(c *nftables.Conn, p policy, s tableSets) {
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		if hook == nil { // a regular chain, entered by jump
			return c.AddChain(&nftables.Chain{Name: name, Table: roostTable})
		}
		return c.AddChain(&nftables.Chain{
			Name: name, Table: roostTable, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept,
		})
	}
	rules := func(ch *nftables.Chain, rs ...[]expr.Any) {
		for _, r := range rs {
			if r != nil {
				c.AddRule(&nftables.Rule{Table: roostTable, Chain: ch, Exprs: r})
			}
		}
	}
	dns := func(proto byte, then []expr.Any, pre ...[]expr.Any) []expr.Any {
		return join(join(pre...), daddr(), inSet(s.resolvers), dstPort(proto, 53), then)
	}

	pre := chain("prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	rules(pre,
		join(iif(true), ipv4(), saddr(), masked([]byte{0, 0, 0, 3}, []byte{0, 0, 0, 2}, expr.CmpOpNeq), drop()),
		join(iif(true), ipv4(), rpfMissing(), drop()),
	)

	// Input is every address of the host, on whatever interface it sits.
	online := join(iif(true), ipv4(), saddr(), notInSet(s.noInternet))
	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	rules(in,
		join(iif(true), establishedOrRelated(), verdict(expr.VerdictAccept)),
		dns(unix.IPPROTO_UDP, verdict(expr.VerdictAccept), online),
		dns(unix.IPPROTO_TCP, verdict(expr.VerdictAccept), online),
		join(iif(true), drop()),
	)

	private := chain(privateChain, "", nil, nil)
	rules(private,
		dns(unix.IPPROTO_UDP, verdict(expr.VerdictReturn)),
		dns(unix.IPPROTO_TCP, verdict(expr.VerdictReturn)),
		drop(),
	)

	var conns, rate []expr.Any
	if p.maxConns > 0 {
		conns = join(ctStateNew(), saddr(), perSource(s.conns, &expr.Connlimit{Count: uint32(p.maxConns), Flags: expr.NFT_CONNLIMIT_F_INV}), drop())
	}
	if p.connRate > 0 {
		rate = join(ctStateNew(), saddr(), perSource(s.newConns, &expr.Limit{
			Type: expr.LimitTypePkts, Rate: uint64(p.connRate), Unit: expr.LimitTimeSecond, Burst: uint32(2 * p.connRate), Over: true,
		}), drop())
	}
	out := chain(egressChain, "", nil, nil)
	rules(out,
		join(saddr(), inSet(s.noInternet), drop()),
		join(ctDNAT(), drop()),
		join(daddr(), inSet(s.blocked), notInSet(s.allowed), jump(privateChain)),
		conns,
		rate,
		verdict(expr.VerdictAccept),
	)

	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	rules(fwd,
		join(iif(true), oif(true), drop()),
		join(iif(true), notIPv4(), drop()),
		join(oif(true), notIPv4(), drop()),
		join(iif(true), jump(egressChain)),
		join(oif(true), establishedOrRelated(), verdict(expr.VerdictAccept)),
		join(oif(true), drop()),
	)

	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	rules(post,
		join(ipv4(), saddr(), inPrefix(p.subnet), oif(false), []expr.Any{&expr.Masq{}}),
	)
}

// setElements adds (add) or removes the addresses from no_internet in one
// batch. Removal first adds, so it succeeds whether or not an address was
// there; both are idempotent.
func setElements(add bool, addrs ...netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	elems := addrElements(addrs)
	if err := c.SetAddElements(noInternet, elems); err != nil {
		return fmt.Errorf("nftables set %s: %w", noInternetSet, err)
	}
	if !add {
		if err := c.SetDeleteElements(noInternet, elems); err != nil {
			return fmt.Errorf("nftables set %s: %w", noInternetSet, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update nftables set %s: %w", noInternetSet, err)
	}
	return nil
}

// addResolvers adds addresses to the resolvers set; adding one that is
// there already is not an error.
func addResolvers(addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return nil
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if err := c.SetAddElements(resolvers, addrElements(addrs)); err != nil {
		return fmt.Errorf("nftables set %s: %w", resolversSet, err)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("update nftables set %s: %w", resolversSet, err)
	}
	return nil
}

// listNoInternet returns the addresses in no_internet.
func listNoInternet() ([]netip.Addr, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	elems, err := c.GetSetElements(noInternet)
	if err != nil {
		return nil, fmt.Errorf("list nftables set %s: %w", noInternetSet, err)
	}
	addrs := make([]netip.Addr, 0, len(elems))
	for _, e := range elems {
		if a, ok := netip.AddrFromSlice(e.Key); ok {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}
