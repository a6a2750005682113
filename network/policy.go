package network

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"roost.dev/roost/errdefs"
)

// BlockedRanges are the IPv4 destinations a sandbox may not reach unless
// an operator allows them (Config.AllowCIDRs): everything that is not the
// public internet. A sandbox reaching them would be masqueraded as the
// host, so it would reach the host's LAN or VPC, the cloud's metadata
// service, other agents and the database with the host's standing.
var BlockedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("10.0.0.0/8"),      // private (RFC 1918)
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT; some clouds' metadata (100.100.100.200)
	netip.MustParsePrefix("127.0.0.0/8"),     // loopback
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local; cloud metadata (169.254.169.254)
	netip.MustParsePrefix("172.16.0.0/12"),   // private (RFC 1918)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation (TEST-NET-1)
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast (deprecated)
	netip.MustParsePrefix("192.168.0.0/16"),  // private (RFC 1918)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation (TEST-NET-2)
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation (TEST-NET-3)
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, and the limited broadcast 255.255.255.255
}

// ParseCIDRs parses --allow-sandbox-cidr values: IPv4 prefixes such as
// 10.1.2.0/24 (a bare address means its /32). Host bits must be zero, so
// that a typo like 10.1.2.3/8 is not silently widened. IPv6 is refused:
// sandboxes have no IPv6 connectivity to open.
func ParseCIDRs(values []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(values))
	for _, v := range values {
		p, err := parseCIDR(strings.TrimSpace(v))
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func parseCIDR(v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		a, aerr := netip.ParseAddr(v)
		if aerr != nil {
			return netip.Prefix{}, fmt.Errorf("sandbox CIDR %q: want an IPv4 prefix like 10.1.2.0/24: %w", v, errdefs.ErrInvalid)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("sandbox CIDR %q: only IPv4 (sandboxes have no IPv6): %w", v, errdefs.ErrInvalid)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("sandbox CIDR %q: has host bits set; did you mean %s?: %w", v, p.Masked(), errdefs.ErrInvalid)
	}
	return p, nil
}

// addrRange is the IPv4 interval [lo, hi], both included.
type addrRange struct{ lo, hi uint32 }

func u32(a netip.Addr) uint32 { b := a.As4(); return binary.BigEndian.Uint32(b[:]) }

func addrOf(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v)))
}

// mergeRanges turns prefixes into sorted, disjoint, non-adjacent ranges:
// the kernel's interval sets refuse overlapping elements, and operators
// may well give overlapping CIDRs.
func mergeRanges(prefixes []netip.Prefix) []addrRange {
	rs := make([]addrRange, 0, len(prefixes))
	for _, p := range prefixes {
		p = p.Masked()
		lo := u32(p.Addr())
		rs = append(rs, addrRange{lo, lo | uint32(uint64(1)<<(32-p.Bits())-1)})
	}
	slices.SortFunc(rs, func(a, b addrRange) int { return cmp.Compare(a.lo, b.lo) })
	var out []addrRange
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].hi == ^uint32(0) || r.lo <= out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return out
}
