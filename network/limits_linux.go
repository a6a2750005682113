package network

import (
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// limitEgress shapes what leaves the sandbox through link, its eth0, with
// a tbf qdisc; nl is a handle inside the sandbox's namespace. The
// namespace belongs to the host's user namespace, so sandbox root, whose
// capabilities are those of its own user namespace, cannot remove it.
func limitEgress(nl *netlink.Handle, link netlink.Link, l RateLimit) error {
	if l.Rate == 0 {
		return nil
	}
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       l.Rate,
		Buffer:     netlink.Xmittime(l.Rate, l.Burst),
		// Queue up to 50 ms at the sustained rate before dropping.
		Limit: uint32(min(l.Rate/20, 1<<30)),
	}
	if err := nl.QdiscReplace(q); err != nil {
		return fmt.Errorf("egress limit on sandbox %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// strictARP turns on strict reverse-path filtering on a sandbox's host
// link. Besides IPv4 (which the prerouting chain already filters) it
// governs ARP: the host learns a neighbour from the link only for an
// address routed through it, the sandbox's own. Otherwise ARP requests
// with made-up sender addresses fill the host's neighbour table
// (gc_thresh3, 1024 entries by default), and the host loses its LAN.
func strictARP(link string) error {
	p := "/proc/sys/net/ipv4/conf/" + link + "/rp_filter"
	if err := os.WriteFile(p, []byte("1"), 0); err != nil {
		return fmt.Errorf("strict reverse-path filter on %s: %w", link, err)
	}
	return nil
}

// forgetConnections removes the host's conntrack entries of addr, a
// sandbox's address, in either direction.
func forgetConnections(addr netip.Addr) error {
	var src, dst netlink.ConntrackFilter
	if err := src.AddIP(netlink.ConntrackOrigSrcIP, addr.AsSlice()); err != nil {
		return fmt.Errorf("conntrack filter: %w", err)
	}
	if err := dst.AddIP(netlink.ConntrackOrigDstIP, addr.AsSlice()); err != nil {
		return fmt.Errorf("conntrack filter: %w", err)
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, &src, &dst); err != nil {
		return fmt.Errorf("forget conntrack entries of %s: %w", addr, err)
	}
	return nil
}
