package network

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
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

// hostLinkSysctls sets a sandbox's link, on the host's side, as it must
// be before it comes up.
//
// Strict reverse-path filtering: besides IPv4 (which the prerouting
// chain already filters) it governs ARP: the host learns a neighbour
// from the link only for an address routed through it, the sandbox's
// own. Otherwise ARP requests with made-up sender addresses fill the
// host's neighbour table (gc_thresh3, 1024 entries by default), and the
// host loses its LAN. It is set over netlink, not through the host's
// /proc/sys/net/ipv4, whose lookup walks an entry for every network
// namespace that has used that path (see setSandboxSysctls).
//
// No IPv6: sandboxes have none, and the host's IPv6 on a link costs
// every later link a little more. The host would give the link an
// address and routes in its own IPv6 table, and each link coming up or
// going walks that whole table: with 1,000 sandboxes, the network setup
// of the next one took 9.8 ms against 2.9 ms on an empty host. A host
// without IPv6 at all has nothing to turn off.
func hostLinkSysctls(link netlink.Link) error {
	name := link.Attrs().Name
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfRPFilter, nl.Uint32Attr(1))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("strict reverse-path filter on %s: %w", name, err)
	}
	p := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("turn IPv6 off on %s: %w", name, err)
	}
	return nil
}

// ipv4DevconfRPFilter is IPV4_DEVCONF_RP_FILTER of linux/ip.h: the
// attribute of rp_filter in a link's IFLA_INET_CONF.
const ipv4DevconfRPFilter = 8

// forgetConnections removes the host's conntrack entries of addrs,
// sandboxes' addresses, in either direction. The kernel walks its whole
// table (every hash bucket, nf_conntrack_buckets of them, 262144 on a
// host with 16 GiB or more) for each call whatever it finds, so callers
// batch their addresses: see connForgetter.
func forgetConnections(addrs []netip.Addr) error {
	filters := make([]netlink.CustomConntrackFilter, 0, 2*len(addrs))
	for _, addr := range addrs {
		var src, dst netlink.ConntrackFilter
		if err := src.AddIP(netlink.ConntrackOrigSrcIP, addr.AsSlice()); err != nil {
			return fmt.Errorf("conntrack filter: %w", err)
		}
		if err := dst.AddIP(netlink.ConntrackOrigDstIP, addr.AsSlice()); err != nil {
			return fmt.Errorf("conntrack filter: %w", err)
		}
		filters = append(filters, &src, &dst)
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, filters...); err != nil {
		return fmt.Errorf("forget conntrack entries of %v: %w", addrs, err)
	}
	return nil
}

// connForgetter batches forgetConnections as a database batches commits:
// a walk of the table takes every address asked for until it starts, and
// walks start at most one per connWalkInterval. A teardown after a quiet
// spell walks at once; teardowns at a high rate share walks, so their
// cost per teardown falls as the rate rises instead of taking a core.
type connForgetter struct {
	mu   sync.Mutex
	cond *sync.Cond
	busy bool       // a caller is waiting to walk, or walking
	next *connBatch // the addresses of the next walk
	last time.Time  // when the last walk ended
	// walks counts the walks made.
	walks int
}

// connWalkInterval is the least time from the end of a walk of the
// conntrack table to the start of the next. A walk takes 5 to 15 ms on a
// host with the default 262144 buckets.
const connWalkInterval = 250 * time.Millisecond

// connBatch is the addresses of one walk of the conntrack table and, once
// it ran, its outcome.
type connBatch struct {
	addrs []netip.Addr
	done  bool
	err   error
}

func newConnForgetter() *connForgetter {
	f := &connForgetter{next: &connBatch{}}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// forget removes addr's conntrack entries, in a walk of the table that
// starts after this call did.
func (f *connForgetter) forget(addr netip.Addr) error {
	f.mu.Lock()
	b := f.next
	b.addrs = append(b.addrs, addr)
	for f.busy && !b.done {
		f.cond.Wait()
	}
	if b.done { // another caller walked for b
		err := b.err
		f.mu.Unlock()
		return err
	}
	// No walk runs or waits to, and b's has not run: this caller walks
	// for b, once the interval since the last walk has passed. Addresses
	// asked for meanwhile join b.
	f.busy = true
	if wait := time.Until(f.last.Add(connWalkInterval)); wait > 0 {
		f.mu.Unlock()
		time.Sleep(wait)
		f.mu.Lock()
	}
	f.next = &connBatch{}
	f.mu.Unlock()
	err := forgetConnections(b.addrs)
	f.mu.Lock()
	b.done, b.err, f.busy, f.last = true, err, false, time.Now()
	f.walks++
	f.cond.Broadcast()
	f.mu.Unlock()
	return err
}
