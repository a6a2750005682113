package network

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

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

// notInSet is inSet inverted: register 1 is not an element of s.
func notInSet(s *nftables.Set) []expr.Any {
	return []expr.Any{&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: true}}
}

// dstPort matches an IPv4 packet of protocol proto (unix.IPPROTO_TCP or
// _UDP) to destination port port.
func dstPort(proto byte, port uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)},
	}
}

// ctStateNew matches the first packet of a connection.
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitNEW),
			Xor:  make([]byte, 4),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// ipsDstNAT is the conntrack status bit of a destination-NATed connection
// (IPS_DST_NAT in linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

// ctDNAT matches a connection whose destination was rewritten on the
// host, such as a port published on a host address by Docker.
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{
			SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, ipsDstNAT),
			Xor:  make([]byte, 4),
		},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// perSource adds the IPv4 source in register 1 to the dynamic set s and
// matches when the element's stateful expression e matches: `add @s {
// ip saddr e }`.
func perSource(s *nftables.Set, e expr.Any) []expr.Any {
	return []expr.Any{&expr.Dynset{
		SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: uint32(unix.NFT_DYNSET_OP_ADD), Exprs: []expr.Any{e},
	}}
}

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}

// rangeElements encodes ranges as interval set elements: a start key, and
// the first address past the range flagged as an interval end (none for a
// range that runs to 255.255.255.255).
func rangeElements(rs []addrRange) []nftables.SetElement {
	var elems []nftables.SetElement
	for _, r := range rs {
		lo := addrOf(r.lo).As4()
		elems = append(elems, nftables.SetElement{Key: lo[:]})
		if r.hi != ^uint32(0) {
			end := addrOf(r.hi + 1).As4()
			elems = append(elems, nftables.SetElement{Key: end[:], IntervalEnd: true})
		}
	}
	return elems
}

func addrElements(addrs []netip.Addr) []nftables.SetElement {
	elems := make([]nftables.SetElement, len(addrs))
	for i, a := range addrs {
		b := a.As4()
		elems[i] = nftables.SetElement{Key: b[:]}
	}
	return elems
}
