package network

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestForgetConnectionsBatched has teardowns forget their addresses'
// conntrack entries at once: each call returns once its own are gone, an
// address no call named keeps its entries, and calls close together share
// walks of the table.
func TestForgetConnectionsBatched(t *testing.T) {
	requireRoot(t)
	// Addresses of TEST-NET-2, which no sandbox or host here uses.
	addrs := []netip.Addr{netip.MustParseAddr("198.51.100.11"), netip.MustParseAddr("198.51.100.12"),
		netip.MustParseAddr("198.51.100.13"), netip.MustParseAddr("198.51.100.14")}
	kept := netip.MustParseAddr("198.51.100.20")
	peer := netip.MustParseAddr("198.51.100.99")
	for i, a := range append(addrs, kept) {
		addFlow(t, a, peer, uint16(40000+i)) // the address as source
		addFlow(t, peer, a, uint16(41000+i)) // and as destination
	}
	t.Cleanup(func() { _ = forgetConnections(append(addrs, kept)) })

	f := newConnForgetter()
	// A first walk just ended: the calls below wait for the interval,
	// and all join one walk.
	f.last = time.Now()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(addrs))
	for i, a := range addrs {
		wg.Go(func() { errs[i] = f.forget(a) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("forget %s: %v", addrs[i], err)
		}
	}
	if d := time.Since(start); d < connWalkInterval/2 {
		t.Errorf("calls returned after %v, before the walk interval passed", d)
	}
	for _, a := range addrs {
		if n := flowsOf(t, a); n != 0 {
			t.Errorf("%s: %d conntrack entries left", a, n)
		}
	}
	if f.walks != 1 {
		t.Errorf("%d calls at once made %d walks of the table, want 1", len(addrs), f.walks)
	}
	if n := flowsOf(t, kept); n != 2 {
		t.Errorf("%s, not forgotten: %d conntrack entries, want 2", kept, n)
	}
}

// addFlow adds a UDP conntrack entry from src to dst.
func addFlow(t *testing.T, src, dst netip.Addr, port uint16) {
	t.Helper()
	flow := &netlink.ConntrackFlow{
		FamilyType: unix.AF_INET,
		Forward:    netlink.IPTuple{SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Protocol: unix.IPPROTO_UDP, SrcPort: port, DstPort: 53},
		Reverse:    netlink.IPTuple{SrcIP: dst.AsSlice(), DstIP: src.AsSlice(), Protocol: unix.IPPROTO_UDP, SrcPort: 53, DstPort: port},
		TimeOut:    120,
	}
	if err := netlink.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, flow); err != nil {
		t.Fatalf("add conntrack entry %s → %s: %v", src, dst, err)
	}
}

// flowsOf counts the conntrack entries with a in their original tuple.
func flowsOf(t *testing.T, a netip.Addr) int {
	t.Helper()
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range flows {
		if f.Forward.SrcIP.Equal(a.AsSlice()) || f.Forward.DstIP.Equal(a.AsSlice()) {
			n++
		}
	}
	return n
}
