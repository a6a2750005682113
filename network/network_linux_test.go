package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

func TestSetupShape(t *testing.T) {
	m := newTestManager(t)
	sb := setupSandbox(t, m, true)
	want := runtime.Network{
		Netns:     NetnsPath(sb.id),
		Interface: "eth0",
		Address:   m.plan.sandbox(sb.slot),
		Gateway:   m.plan.host(sb.slot).Addr(),
		DNS:       m.dns.addrs,
	}
	if !reflect.DeepEqual(sb.net, want) {
		t.Fatalf("Setup = %+v, want %+v", sb.net, want)
	}

	host, err := netlink.LinkByName(hostLink(sb.slot))
	if err != nil {
		t.Fatalf("host link: %v", err)
	}
	if host.Type() != "veth" || host.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("host link %s: type %s, flags %v; want an up veth", hostLink(sb.slot), host.Type(), host.Attrs().Flags)
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + hostLink(sb.slot) + "/rp_filter"); err != nil || strings.TrimSpace(string(b)) != "1" {
		t.Errorf("host link %s: rp_filter = %q (%v), want 1 (strict)", hostLink(sb.slot), b, err)
	}
	// No IPv6 on the host side: no address, no route in the host's table
	// (which every link event would walk).
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + hostLink(sb.slot) + "/disable_ipv6"); err == nil {
		if strings.TrimSpace(string(b)) != "1" {
			t.Errorf("host link %s: disable_ipv6 = %q, want 1", hostLink(sb.slot), b)
		}
		if addrs, err := netlink.AddrList(host, netlink.FAMILY_V6); err != nil || len(addrs) != 0 {
			t.Errorf("host link %s: IPv6 addresses %v (%v), want none", hostLink(sb.slot), addrs, err)
		}
		if routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: host.Attrs().Index, Table: unix.RT_TABLE_UNSPEC},
			netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE); err != nil || len(routes) != 0 {
			t.Errorf("host link %s: IPv6 routes %v (%v), want none", hostLink(sb.slot), routes, err)
		}
	}

	// Inside: sysctls, lo and eth0 up, the address and the default route.
	err = inNetns(sb.net.Netns, func() error {
		for _, s := range sandboxSysctls {
			b, err := os.ReadFile(s.path)
			if err != nil {
				return err
			}
			if got := strings.Join(strings.Fields(string(b)), " "); got != s.value {
				t.Errorf("%s = %q, want %q", s.path, got, s.value)
			}
		}
		for _, name := range []string{"lo", "eth0"} {
			l, err := netlink.LinkByName(name)
			if err != nil {
				return err
			}
			if l.Attrs().Flags&net.FlagUp == 0 {
				t.Errorf("%s is down", name)
			}
		}
		eth0, _ := netlink.LinkByName("eth0")
		addrs, err := netlink.AddrList(eth0, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		if len(addrs) != 1 || addrs[0].IPNet.String() != want.Address.String() {
			t.Errorf("eth0 addresses %v, want only %s", addrs, want.Address)
		}
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		var gw bool
		for _, r := range routes {
			gw = gw || (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == want.Gateway.String()
		}
		if !gw {
			t.Errorf("no default route via %s in %v", want.Gateway, routes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The namespace is a named one: iproute2 finds and enters it.
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Log("skipping the ip netns exec check: no ip binary")
		return
	}
	out, err := exec.Command(ip, "netns", "exec", prefix+sb.id, ip, "-4", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), want.Address.String()) {
		t.Errorf("ip netns exec: %v: %s; want %s on eth0", err, out, want.Address)
	}
}

func TestIsolation(t *testing.T) {
	m := newTestManager(t)
	a := setupSandbox(t, m, true)
	b := setupSandbox(t, m, true)
	world := newOutside(t)
	srvA, srvB := serve(t, a.net.Netns), serve(t, b.net.Netns)
	srvHost, srvWorld := serve(t, ""), serve(t, world.ns)
	echoWorld, udpWorld := serveEcho(t, world.ns), serveUDP(t, world.ns)
	at := func(addr netip.Addr, s *echoServer) netip.AddrPort { return netip.AddrPortFrom(addr, s.port) }

	t.Run("host reaches sandboxes", func(t *testing.T) {
		for _, sb := range []struct {
			sandbox
			srv *echoServer
		}{{a, srvA}, {b, srvB}} {
			if seen := mustReach(t, "", at(sb.net.Address.Addr(), sb.srv)); seen != sb.net.Gateway {
				t.Errorf("sandbox %s saw the host as %s, want its gateway %s", sb.id, seen, sb.net.Gateway)
			}
		}
	})

	t.Run("sandbox cannot reach the host", func(t *testing.T) {
		mustReach(t, "", at(netip.MustParseAddr("127.0.0.1"), srvHost)) // it is listening
		// A's gateway, B's, the outside's, and every host address that
		// is not another sandbox's gateway (those come and go with other
		// tests).
		targets := []netip.Addr{a.net.Gateway, b.net.Gateway, world.hostAddr}
		for _, addr := range hostAddrs(t) {
			if !DefaultSubnet.Contains(addr) && !slices.Contains(targets, addr) {
				targets = append(targets, addr)
			}
		}
		for _, addr := range targets {
			mustBeBlocked(t, a.net.Netns, netip.Addr{}, at(addr, srvHost))
		}
		t.Logf("blocked from A to the host listener on %d host addresses %v", len(targets), targets)
	})

	t.Run("sandbox cannot reach another sandbox", func(t *testing.T) {
		mustBeBlocked(t, a.net.Netns, netip.Addr{}, at(b.net.Address.Addr(), srvB))
		mustBeBlocked(t, b.net.Netns, netip.Addr{}, at(a.net.Address.Addr(), srvA))
	})

	t.Run("link-local is blocked", func(t *testing.T) {
		mustReach(t, "", at(world.linkLocal, srvWorld)) // the route to it works
		mustBeBlocked(t, a.net.Netns, netip.Addr{}, at(world.linkLocal, srvWorld))
	})

	t.Run("internet switch", func(t *testing.T) {
		if seen := mustReach(t, a.net.Netns, at(world.addr, srvWorld)); seen != world.hostAddr {
			t.Errorf("the outside saw sandbox A as %s, want the host's %s (NAT)", seen, world.hostAddr)
		}
		conn := dialEcho(t, a.net.Netns, netip.AddrPortFrom(world.addr, echoWorld.port))
		if err := echoOnce(conn, reachWait); err != nil {
			t.Fatalf("echo through an open connection: %v", err)
		}
		if err := m.SetInternet(t.Context(), a.slot, false); err != nil {
			t.Fatalf("SetInternet(off): %v", err)
		}
		mustBeBlocked(t, a.net.Netns, netip.Addr{}, at(world.addr, srvWorld))
		var ne net.Error
		if err := echoOnce(conn, blockedWait); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("echo through a connection opened before internet went off: %v, want a timeout", err)
		}
		mustReach(t, b.net.Netns, at(world.addr, srvWorld)) // only A is cut off
		if err := m.SetInternet(t.Context(), a.slot, false); err != nil {
			t.Fatalf("SetInternet(off) again: %v", err)
		}
		mustReach(t, "", at(a.net.Address.Addr(), srvA)) // the host still reaches it

		// Taking another address does not get around the switch. Replies
		// to a spoofed source never come back to A, so this is measured by
		// what arrives at the outside: UDP datagrams.
		sub := m.plan.sandbox(a.slot).Masked().Addr() // the /30's network address
		spoofs := []netip.Addr{b.net.Address.Addr(), sub, world.addr.Next().Next()}
		for _, spoof := range spoofs {
			addSandboxAddr(t, a, spoof)
			sendUDP(t, a.net.Netns, spoof, netip.AddrPortFrom(world.addr, udpWorld.port), "spoofed from "+spoof.String())
		}

		if err := m.SetInternet(t.Context(), a.slot, true); err != nil {
			t.Fatalf("SetInternet(on): %v", err)
		}
		mustReach(t, a.net.Netns, at(world.addr, srvWorld))
		// Datagrams travel in order on this path: once A's own arrives,
		// a spoofed one that got through would have arrived before it.
		sendUDP(t, a.net.Netns, a.net.Address.Addr(), netip.AddrPortFrom(world.addr, udpWorld.port), "genuine")
		if got := udpWorld.next(t); got != "genuine" {
			t.Errorf("the outside received %q, want only the genuine datagram (spoofed sources %v)", got, spoofs)
		}
		if err := m.SetInternet(t.Context(), a.slot, true); err != nil {
			t.Fatalf("SetInternet(on) again: %v", err)
		}
	})
}

// addSandboxAddr adds addr/32 to the sandbox's eth0, as its root could.
func addSandboxAddr(t *testing.T, sb sandbox, addr netip.Addr) {
	t.Helper()
	err := inNetns(sb.net.Netns, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(addr, 32))})
	})
	if err != nil {
		t.Fatalf("add %s in sandbox: %v", addr, err)
	}
}

func TestTeardown(t *testing.T) {
	m := newTestManager(t)
	for _, internet := range []bool{true, false} {
		id, slot := "t"+randHex(10), acquireSlot(t, m)
		if _, err := m.Setup(t.Context(), id, slot, internet); err != nil {
			t.Fatalf("Setup: %v", err)
		}
		if !internet && len(leftovers(t, m, id, slot)) != 3 {
			t.Fatalf("after Setup: found %v, want netns, link and element", leftovers(t, m, id, slot))
		}
		for i := range 2 { // idempotent
			if err := m.Teardown(t.Context(), id, slot); err != nil {
				t.Fatalf("Teardown #%d: %v", i+1, err)
			}
			if left := leftovers(t, m, id, slot); len(left) > 0 {
				t.Fatalf("Teardown #%d (internet %v) left %v", i+1, internet, left)
			}
		}
	}
}

func TestSetupFailures(t *testing.T) {
	m := newTestManager(t)
	existing := setupSandbox(t, m, true)

	cancelled, cancel := context.WithCancel(t.Context())
	cancel()

	tests := []struct {
		name  string
		ctx   context.Context
		id    string
		slot  int
		plant func(t *testing.T, slot int) // something in the way
		want  error
	}{
		{name: "duplicate id", id: existing.id, want: errdefs.ErrConflict},
		{name: "link exists", plant: plantLink, want: errdefs.ErrConflict},
		{name: "slot out of range", slot: m.Capacity() + 1, want: errdefs.ErrInvalid},
		{name: "bad id", id: "../etc", want: errdefs.ErrInvalid},
		{name: "cancelled", ctx: cancelled, want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, id, slot := tt.ctx, tt.id, tt.slot
			if ctx == nil {
				ctx = t.Context()
			}
			if id == "" {
				id = "t" + randHex(10)
			}
			if slot == 0 {
				slot = acquireSlot(t, m)
			}
			if tt.plant != nil {
				tt.plant(t, slot)
			}
			_, err := m.Setup(ctx, id, slot, false)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Setup = %v, want %v", err, tt.want)
			}
			// Nothing of the failed call remains (a planted link is not its own).
			if id != existing.id {
				if _, err := os.Lstat(NetnsPath(id)); err == nil {
					t.Errorf("failed Setup left %s", NetnsPath(id))
				}
			}
			if elems, _ := listNoInternet(); m.plan.valid(slot) && slices.Contains(elems, m.plan.sandbox(slot).Addr()) {
				t.Errorf("failed Setup left the no_internet element of slot %d", slot)
			}
		})
	}
	// The sandbox whose id was reused is untouched.
	if _, err := os.Lstat(existing.net.Netns); err != nil {
		t.Errorf("existing sandbox lost its namespace: %v", err)
	}
	if _, err := netlink.LinkByName(hostLink(existing.slot)); err != nil {
		t.Errorf("existing sandbox lost its link: %v", err)
	}
}

// plantLink puts a veth named like slot's host link in the way.
func plantLink(t *testing.T, slot int) {
	t.Helper()
	plantVeth(t, hostLink(slot))
}

// plantVeth creates a veth pair on the host (this kernel has no dummy
// links) that the test's cleanup removes.
func plantVeth(t *testing.T, name string) {
	t.Helper()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "roostp" + randHex(8)}); err != nil {
		t.Fatalf("plant %s: %v", name, err)
	}
}

func TestAcquireSkipsLiveLinks(t *testing.T) {
	m := newTestManager(t)
	first := acquireSlot(t, m)
	m.Release(first)
	plantLink(t, first) // as another Manager on the host would have
	if got := acquireSlot(t, m); got == first {
		t.Fatalf("Acquire = %d, whose link exists", got)
	}
	if err := m.Reserve(first); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("Reserve(%d) = %v; want ErrConflict: the skipped slot stays taken", first, err)
	}
}

func TestPrune(t *testing.T) {
	m := newTestManager(t)
	kept := setupSandbox(t, m, false)

	// Leftovers: a whole sandbox network, a lone namespace, a lone veth, a
	// lone element.
	stale := sandbox{id: "t" + randHex(10), slot: acquireSlot(t, m)}
	loneNs, loneLink, loneElem := "t"+randHex(10), acquireSlot(t, m), acquireSlot(t, m)
	t.Cleanup(func() {
		_ = m.Teardown(context.Background(), stale.id, stale.slot)
		_ = removeNetns(NetnsPath(loneNs))
		_ = setElements(false, m.plan.sandbox(loneElem).Addr())
	})
	if _, err := m.Setup(t.Context(), stale.id, stale.slot, false); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	ns, err := createNetns(NetnsPath(loneNs))
	if err != nil {
		t.Fatalf("plant namespace: %v", err)
	}
	ns.close()
	plantLink(t, loneLink)
	if err := m.SetInternet(t.Context(), loneElem, false); err != nil {
		t.Fatalf("plant element: %v", err)
	}
	// Something named roost-* that is not this package's to prune.
	foreign := "roost-x" + randHex(6)
	plantVeth(t, foreign)

	// Everything else that exists (other tests, other processes on this
	// host) is kept, listed right before the sweep: only the planted
	// leftovers may go.
	planted := map[string]bool{stale.id: true, loneNs: true}
	plantedSlots := map[int]bool{stale.slot: true, loneLink: true, loneElem: true}
	keep := map[string]int{kept.id: kept.slot}
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if id, ok := strings.CutPrefix(e.Name(), prefix); ok && !planted[id] {
			keep[id] = 0
		}
	}
	links, _ := m.listLinks()
	for _, l := range links {
		if slot, ok := slotOfLink(l.Attrs().Name); ok && !plantedSlots[slot] {
			keep["link/"+l.Attrs().Name] = slot
		}
	}
	elems, _ := listNoInternet()
	for _, a := range elems {
		if slot, ok := m.plan.slotOf(a); ok && !plantedSlots[slot] {
			keep["element/"+a.String()] = slot
		}
	}

	for i := range 2 {
		if err := m.Prune(t.Context(), keep); err != nil {
			t.Fatalf("Prune #%d: %v", i+1, err)
		}
	}

	for _, c := range []struct {
		id   string
		slot int
	}{{stale.id, stale.slot}, {loneNs, loneLink}, {"none", loneElem}} {
		if left := leftovers(t, m, c.id, c.slot); len(left) > 0 {
			t.Errorf("Prune left %v", left)
		}
	}
	if left := leftovers(t, m, kept.id, kept.slot); len(left) != 3 {
		t.Errorf("Prune removed part of a kept sandbox: %v remain, want netns, link and element", left)
	}
	if _, err := netlink.LinkByName(foreign); err != nil {
		t.Errorf("Prune removed %s, which it does not own: %v", foreign, err)
	}
}

func TestCycles(t *testing.T) {
	m := newTestManager(t)
	slot := acquireSlot(t, m)
	const cycles = 50
	for i := range cycles {
		id := "t" + randHex(10)
		if _, err := m.Setup(t.Context(), id, slot, i%2 == 0); err != nil {
			t.Fatalf("cycle %d: Setup: %v", i, err)
		}
		if err := m.Teardown(t.Context(), id, slot); err != nil {
			t.Fatalf("cycle %d: Teardown: %v", i, err)
		}
		if left := leftovers(t, m, id, slot); len(left) > 0 {
			t.Fatalf("cycle %d left %v", i, left)
		}
	}
}

func TestConcurrentSetup(t *testing.T) {
	m := newTestManager(t)
	const n = 8
	sbs := make([]sandbox, n)
	for i := range sbs {
		sbs[i] = sandbox{id: "t" + randHex(10), slot: acquireSlot(t, m)}
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, sb := range sbs {
		wg.Go(func() {
			if _, errs[i] = m.Setup(t.Context(), sb.id, sb.slot, i%2 == 0); errs[i] == nil {
				errs[i] = m.Teardown(t.Context(), sb.id, sb.slot)
			}
		})
	}
	wg.Wait()
	for i, sb := range sbs {
		if errs[i] != nil {
			t.Errorf("sandbox %d: %v", i, errs[i])
		}
		if left := leftovers(t, m, sb.id, sb.slot); len(left) > 0 {
			t.Errorf("sandbox %d left %v", i, left)
		}
	}
}

func TestNewKeepsNoInternet(t *testing.T) {
	m := newTestManager(t)
	sb := setupSandbox(t, m, false)
	// An agent restart reinstalls the table; the sandbox must stay offline.
	m2 := newTestManager(t)
	if left := leftovers(t, m2, sb.id, sb.slot); len(left) != 3 {
		t.Fatalf("after New: %v remain, want netns, link and element", left)
	}
}

// BenchmarkSetupTeardown measures one sandbox network's life, alternating
// internet on and off; setup-ms and teardown-ms split the time.
func BenchmarkSetupTeardown(b *testing.B) {
	m := newTestManager(b)
	slot := acquireSlot(b, m)
	ctx := context.Background()
	var setup, teardown time.Duration
	n := 0
	for b.Loop() {
		id := "b" + randHex(10)
		t0 := time.Now()
		if _, err := m.Setup(ctx, id, slot, n%2 == 0); err != nil {
			b.Fatalf("Setup: %v", err)
		}
		t1 := time.Now()
		if err := m.Teardown(ctx, id, slot); err != nil {
			b.Fatalf("Teardown: %v", err)
		}
		setup, teardown = setup+t1.Sub(t0), teardown+time.Since(t1)
		n++
	}
	b.ReportMetric(float64(setup.Microseconds())/1000/float64(n), "setup-ms")
	b.ReportMetric(float64(teardown.Microseconds())/1000/float64(n), "teardown-ms")
}
