package network

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	goruntime "runtime"
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

// Timeouts of test connections. A connection the firewall drops fails by
// timing out (its SYN vanishes); blockedWait bounds how long a test waits
// for that. Neither is a performance assertion.
const (
	reachWait   = 10 * time.Second
	blockedWait = 700 * time.Millisecond
)

// TestMain serialises this package's test processes on the host (two
// `go test` runs in one tree, say): TestPrune sweeps the whole host, and
// the tests share slots, the firewall table and host addresses.
func TestMain(m *testing.M) {
	var lock *os.File
	if os.Geteuid() == 0 {
		var err error
		if lock, err = os.OpenFile("/run/lock/roost-network-test.lock", os.O_RDWR|os.O_CREATE, 0o600); err == nil {
			_ = unix.Flock(int(lock.Fd()), unix.LOCK_EX)
		}
	}
	code := m.Run()
	goruntime.KeepAlive(lock) // its finalizer would close it, releasing the lock
	os.Exit(code)
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, links and nftables rules")
	}
}

func newTestManager(t testing.TB) *Manager {
	t.Helper()
	requireRoot(t)
	m, err := New(Config{}, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// acquireSlot acquires a slot that the test's cleanup releases.
func acquireSlot(t testing.TB, m *Manager) int {
	t.Helper()
	slot, err := m.Acquire()
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t.Cleanup(func() { m.Release(slot) })
	return slot
}

type sandbox struct {
	id   string
	slot int
	net  runtime.Network
}

// setupSandbox sets up a sandbox network that the test's cleanup tears down.
// It moves on to another slot if a concurrent test process took this one
// between Acquire's check and Setup.
func setupSandbox(t testing.TB, m *Manager, internet bool) sandbox {
	t.Helper()
	for {
		sb := sandbox{id: "t" + randHex(10), slot: acquireSlot(t, m)}
		var err error
		sb.net, err = m.Setup(t.Context(), sb.id, sb.slot, internet)
		if errors.Is(err, errdefs.ErrConflict) {
			continue
		}
		if err != nil {
			t.Fatalf("Setup(%s, %d): %v", sb.id, sb.slot, err)
		}
		t.Cleanup(func() {
			if err := m.Teardown(context.Background(), sb.id, sb.slot); err != nil {
				t.Errorf("Teardown(%s): %v", sb.id, err)
			}
		})
		return sb
	}
}

// inNetns runs fn on a thread inside the namespace at path. The thread is
// locked and never unlocked, so it ends with the goroutine. Sockets made by
// fn stay in that namespace and may be used from any goroutine afterwards.
func inNetns(path string, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

// echoServer answers every connection with the peer address it sees.
type echoServer struct {
	ln   net.Listener
	port uint16
	wg   sync.WaitGroup
}

// serve starts an echoServer on 0.0.0.0 inside the namespace at nsPath
// ("" for the host's), stopped by the test's cleanup.
func serve(t testing.TB, nsPath string) *echoServer {
	t.Helper()
	s := &echoServer{}
	listen := func() (err error) {
		s.ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	}
	var err error
	if nsPath == "" {
		err = listen()
	} else {
		err = inNetns(nsPath, listen)
	}
	if err != nil {
		t.Fatalf("listen in %q: %v", nsPath, err)
	}
	s.port = uint16(s.ln.Addr().(*net.TCPAddr).Port)
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			_, _ = fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			c.Close()
		}
	})
	t.Cleanup(func() {
		s.ln.Close()
		s.wg.Wait()
	})
	return s
}

// serveEcho starts a line echo server on 0.0.0.0 inside the namespace at
// nsPath; the test's cleanup closes it and every connection it holds.
func serveEcho(t testing.TB, nsPath string) *echoServer {
	t.Helper()
	s := &echoServer{}
	err := inNetns(nsPath, func() (err error) {
		s.ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in %q: %v", nsPath, err)
	}
	s.port = uint16(s.ln.Addr().(*net.TCPAddr).Port)
	var (
		mu    sync.Mutex // guards conns
		conns []net.Conn
	)
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			s.wg.Go(func() { _, _ = io.Copy(c, c) })
		}
	})
	t.Cleanup(func() {
		s.ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// dialEcho opens a connection from the namespace at nsPath, closed by the
// test's cleanup.
func dialEcho(t testing.TB, nsPath string, dst netip.AddrPort) net.Conn {
	t.Helper()
	var c net.Conn
	err := inNetns(nsPath, func() (err error) {
		c, err = net.DialTimeout("tcp4", dst.String(), reachWait)
		return err
	})
	if err != nil {
		t.Fatalf("from %q to %s: %v", nsPath, dst, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoOnce sends a line and waits up to wait for it to come back.
func echoOnce(c net.Conn, wait time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(wait))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return err
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping\n" {
		return fmt.Errorf("echo %q, want %q", buf, "ping\n")
	}
	return nil
}

// udpServer collects the datagrams it receives.
type udpServer struct {
	port uint16
	got  chan string
}

// serveUDP listens on UDP 0.0.0.0 inside the namespace at nsPath.
func serveUDP(t testing.TB, nsPath string) *udpServer {
	t.Helper()
	var pc net.PacketConn
	err := inNetns(nsPath, func() (err error) {
		pc, err = net.ListenPacket("udp4", "0.0.0.0:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen udp in %q: %v", nsPath, err)
	}
	s := &udpServer{port: uint16(pc.LocalAddr().(*net.UDPAddr).Port), got: make(chan string, 16)}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case s.got <- string(buf[:n]):
			default:
			}
		}
	})
	t.Cleanup(func() {
		pc.Close()
		wg.Wait()
	})
	return s
}

// next waits for the next datagram.
func (s *udpServer) next(t testing.TB) string {
	t.Helper()
	select {
	case m := <-s.got:
		return m
	case <-time.After(reachWait):
		t.Fatalf("no datagram arrived")
		return ""
	}
}

// sendUDP sends one datagram from local inside the namespace at nsPath.
func sendUDP(t testing.TB, nsPath string, local netip.Addr, dst netip.AddrPort, payload string) {
	t.Helper()
	err := inNetns(nsPath, func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)), net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte(payload))
		return err
	})
	if err != nil {
		t.Fatalf("send from %s to %s: %v", local, dst, err)
	}
}

// dial connects from the namespace at nsPath ("" for the host's) to dst,
// from local if valid, and returns the source address the server saw.
func dial(nsPath string, local netip.Addr, dst netip.AddrPort, wait time.Duration) (netip.Addr, error) {
	var seen netip.Addr
	do := func() error {
		d := net.Dialer{Timeout: wait}
		if local.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(local, 0))
		}
		c, err := d.Dial("tcp4", dst.String())
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(wait))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return fmt.Errorf("read from %s: %w", dst, err)
		}
		seen, err = netip.ParseAddr(strings.TrimSpace(line))
		return err
	}
	if nsPath == "" {
		return seen, do()
	}
	return seen, inNetns(nsPath, do)
}

// mustReach dials dst and returns the source address the server saw.
func mustReach(t testing.TB, nsPath string, dst netip.AddrPort) netip.Addr {
	t.Helper()
	seen, err := dial(nsPath, netip.Addr{}, dst, reachWait)
	if err != nil {
		t.Fatalf("from %q to %s: %v, want a connection", nsPath, dst, err)
	}
	return seen
}

// mustBeBlocked dials dst and expects the SYN to be dropped: a timeout,
// not a refusal (which would mean it got through and found no listener).
func mustBeBlocked(t testing.TB, nsPath string, local netip.Addr, dst netip.AddrPort) {
	t.Helper()
	_, err := dial(nsPath, local, dst, blockedWait)
	var ne net.Error
	switch {
	case err == nil:
		t.Errorf("from %q (source %v) to %s: connected, want it blocked", nsPath, local, dst)
	case !errors.As(err, &ne) || !ne.Timeout():
		t.Errorf("from %q (source %v) to %s: %v, want a timeout (dropped)", nsPath, local, dst, err)
	}
}

// outside is a stand-in for the internet: a namespace roost-test-out-<rand>
// joined to the host by a veth, .1/24 on the host and .2/24 inside, in a
// /24 of 11.0.0.0/8 that the host does not use, picked at random so that
// concurrent test processes do not collide. It must be public address
// space: the reserved ranges (benchmarking, documentation) are blocked
// to sandboxes like private ones. It also
// answers for a random 169.254.x.y, routed to it from the host, so that a
// failed link-local block hits this namespace, never a metadata service.
type outside struct {
	ns        string
	addr      netip.Addr
	linkLocal netip.Addr
	hostAddr  netip.Addr
}

var outsideRange = netip.MustParsePrefix("11.0.0.0/8")

func newOutside(t testing.TB) outside {
	t.Helper()
	subnet := freeRange(t)
	suffix := randHex(6)
	o := outside{
		ns:        NetnsPath("test-out-" + suffix),
		hostAddr:  subnet.Addr().Next(),
		addr:      subnet.Addr().Next().Next(),
		linkLocal: randAddr(netip.MustParsePrefix("169.254.0.0/16")),
	}
	// Not roost-*: the firewall must treat it as the world, not a sandbox.
	link := "roostout" + suffix
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(link); err == nil {
			_ = netlink.LinkDel(l)
		}
		if err := removeNetns(o.ns); err != nil {
			t.Errorf("remove outside namespace: %v", err)
		}
	})
	ns, err := createNetns(o.ns)
	if err != nil {
		t.Fatalf("outside namespace: %v", err)
	}
	defer ns.close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = link
	attrs.Flags = net.FlagUp
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(ns.fd)}
	must := func(what string, err error) {
		if err != nil {
			t.Fatalf("outside: %s: %v", what, err)
		}
	}
	must("veth", netlink.LinkAdd(veth))
	must("host address", netlink.AddrAdd(veth, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(o.hostAddr, 24))}))
	must("link-local route", netlink.RouteAdd(&netlink.Route{
		LinkIndex: veth.Attrs().Index,
		Dst:       ipNet(netip.PrefixFrom(o.linkLocal, 32)),
		Gw:        o.addr.AsSlice(),
	}))
	peer, err := ns.nl.LinkByName("eth0")
	must("find eth0", err)
	must("address", ns.nl.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(o.addr, 24))}))
	must("link-local address", ns.nl.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(o.linkLocal, 32))}))
	must("eth0 up", ns.nl.LinkSetUp(peer))
	return o
}

// freeRange picks a random /24 of outsideRange that overlaps no route or
// address of the host.
func freeRange(t testing.TB) netip.Prefix {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("list host routes: %v", err)
	}
	var used []netip.Prefix
	for _, r := range routes {
		if r.Dst != nil {
			if p, ok := prefixOf(r.Dst); ok && p.Bits() > 0 {
				used = append(used, p)
			}
		}
	}
	for _, a := range hostAddrs(t) {
		used = append(used, netip.PrefixFrom(a, 32))
	}
	for range 100 {
		p := netip.PrefixFrom(randAddr(outsideRange), 24).Masked()
		if !slices.ContainsFunc(used, p.Overlaps) {
			return p
		}
	}
	t.Skipf("no free /24 in %s on this host", outsideRange)
	return netip.Prefix{}
}

// randAddr is a random address in p, neither its first nor its last.
func randAddr(p netip.Prefix) netip.Addr {
	var b [4]byte
	_, _ = rand.Read(b[:])
	base := p.Masked().Addr().As4()
	host := binary.BigEndian.Uint32(b[:]) & (1<<(32-p.Bits()) - 1)
	host = max(1, min(host, 1<<(32-p.Bits())-2))
	v := binary.BigEndian.Uint32(base[:]) | host
	return netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, v)))
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP.To4())
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones).Masked(), ok
}

// hostAddrs lists the host's IPv4 addresses outside loopback.
func hostAddrs(t testing.TB) []netip.Addr {
	t.Helper()
	list, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("list host addresses: %v", err)
	}
	var addrs []netip.Addr
	for _, a := range list {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if ok && !ip.IsLoopback() {
			addrs = append(addrs, ip)
		}
	}
	return addrs
}

// leftovers reports what of a sandbox still exists on the host.
func leftovers(t testing.TB, m *Manager, id string, slot int) []string {
	t.Helper()
	var found []string
	if _, err := os.Lstat(NetnsPath(id)); err == nil {
		found = append(found, "netns "+NetnsPath(id))
	}
	if _, err := netlink.LinkByName(hostLink(slot)); err == nil {
		found = append(found, "link "+hostLink(slot))
	}
	elems, err := listNoInternet()
	if err != nil {
		t.Fatalf("list no_internet: %v", err)
	}
	if slices.Contains(elems, m.plan.sandbox(slot).Addr()) {
		found = append(found, "no_internet element "+m.plan.sandbox(slot).Addr().String())
	}
	return found
}
