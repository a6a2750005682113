package network

import (
	"encoding/binary"
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
// re-addresses its eth0 cannot escape the no_internet set.
//
//	prerouting (raw): roost-* with a source that is not a .2 address, or
//	                  not routed back through the interface it came in on → drop
//	input:            roost-* established/related → accept; roost-* → drop
//	forward:          roost-* → roost-* drop; roost-* non-IPv4 drop;
//	                  roost-* from @no_internet drop; roost-* to 169.254/16 drop;
//	                  roost-* → accept; → roost-* established/related accept;
//	                  → roost-* drop
//	postrouting(nat): from the subnet out of a non-roost-* interface → masquerade
//
// Other tables still see the traffic: a host firewall whose forward policy
// is drop (Docker's, for one) also drops sandbox egress.
const (
	tableName      = "roost"
	noInternetSet  = "no_internet"
	noInternetID   = 1 // set ID within the install batch; avoids the library's global counter
	linkLocalBlock = "169.254.0.0/16"
)

var roostTable = &nftables.Table{Name: tableName, Family: nftables.TableFamilyINet}

// noInternet is the set of sandbox addresses whose forwarding is dropped.
var noInternet = &nftables.Set{
	Table:   roostTable,
	ID:      noInternetID,
	Name:    noInternetSet,
	KeyType: nftables.TypeIPAddr,
}

// installTable replaces `inet roost` in one atomic batch, keeping the
// elements of an existing no_internet set so that sandboxes that outlive
// an agent restart never get internet access in between; Prune later drops
// the elements that belong to no sandbox.
func installTable(subnet netip.Prefix) (kept int, err error) {
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
	set := *noInternet
	if err := c.AddSet(&set, elems); err != nil {
		return 0, fmt.Errorf("nftables set %s: %w", noInternetSet, err)
	}
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{
			Name: name, Table: roostTable, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept,
		})
	}
	rules := func(ch *nftables.Chain, rs ...[]expr.Any) {
		for _, r := range rs {
			c.AddRule(&nftables.Rule{Table: roostTable, Chain: ch, Exprs: r})
		}
	}

	pre := chain("prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRaw)
	rules(pre,
		join(iif(true), ipv4(), saddr(), masked([]byte{0, 0, 0, 3}, []byte{0, 0, 0, 2}, expr.CmpOpNeq), drop()),
		join(iif(true), ipv4(), rpfMissing(), drop()),
	)

	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	rules(in,
		join(iif(true), establishedOrRelated(), verdict(expr.VerdictAccept)),
		join(iif(true), drop()),
	)

	linkLocal := netip.MustParsePrefix(linkLocalBlock)
	fwd := chain("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	rules(fwd,
		join(iif(true), oif(true), drop()),
		join(iif(true), notIPv4(), drop()),
		join(oif(true), notIPv4(), drop()),
		join(iif(true), saddr(), inSet(&set), drop()),
		join(iif(true), daddr(), inPrefix(linkLocal), drop()),
		join(iif(true), verdict(expr.VerdictAccept)),
		join(oif(true), establishedOrRelated(), verdict(expr.VerdictAccept)),
		join(oif(true), drop()),
	)

	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	rules(post,
		join(ipv4(), saddr(), inPrefix(subnet), oif(false), []expr.Any{&expr.Masq{}}),
	)

	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("install nftables table inet %s: %w", tableName, err)
	}
	return len(elems), nil
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
	elems := make([]nftables.SetElement, len(addrs))
	for i, a := range addrs {
		b := a.As4()
		elems[i] = nftables.SetElement{Key: b[:]}
	}
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

// Rule building blocks. Register 1 is the only scratch register used.

func join(parts ...[]expr.Any) []expr.Any {
	var all []expr.Any
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// ifname matches interfaces named roost-* (eq) or anything else (!eq): a
// comparison of fewer bytes than IFNAMSIZ is a prefix match.
func ifname(key expr.MetaKey, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)},
	}
}

func iif(roost bool) []expr.Any { return ifname(expr.MetaKeyIIFNAME, roost) }
func oif(roost bool) []expr.Any { return ifname(expr.MetaKeyOIFNAME, roost) }

func nfproto(op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func ipv4() []expr.Any    { return nfproto(expr.CmpOpEq) }
func notIPv4() []expr.Any { return nfproto(expr.CmpOpNeq) }

// saddr and daddr load the IPv4 source or destination; only use them after
// ipv4() or on a path that only carries IPv4.
func saddr() []expr.Any { return ipField(12) }
func daddr() []expr.Any { return ipField(16) }

func ipField(offset uint32) []expr.Any {
	return []expr.Any{&expr.Payload{
		OperationType: expr.PayloadLoad, DestRegister: 1,
		Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4,
	}}
}

// masked compares register 1 & mask with want.
func masked(mask, want []byte, op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(len(mask)), Mask: mask, Xor: make([]byte, len(mask))},
		&expr.Cmp{Op: op, Register: 1, Data: want},
	}
}

func inPrefix(p netip.Prefix) []expr.Any {
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	a := p.Masked().Addr().As4()
	return masked(mask, a[:], expr.CmpOpEq)
}

func inSet(s *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}}
}

// rpfMissing is `fib saddr . iif oif missing`: no route back to the source
// through the interface the packet came in on (strict reverse-path filter).
func rpfMissing() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagSADDR: true, FlagIIF: true, ResultOIF: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
	}
}

func establishedOrRelated() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED),
			Xor:  make([]byte, 4),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// drop counts what it drops, which makes `nft list table inet roost` useful
// when debugging isolation.
func drop() []expr.Any { return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}} }
