package network_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"roost.dev/roost/network"
	"roost.dev/roost/runtime/runtimetest"
)

// spoofScript sends a UDP datagram from each source address given, with a
// raw socket: argv dst port src...
const spoofScript = `
import socket, struct, sys
dst, port, srcs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
except OSError as e:
    print("raw socket refused:", e); sys.exit(0)
for src in srcs:
    data = b"spoofed"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(data), 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    s.sendto(ip + udp, (dst, 0))
print("sent", len(srcs))
`

// arpScript broadcasts ARP requests for the gateway from made-up sender
// addresses on eth0: argv gateway sender...
const arpScript = `
import socket, struct, sys
gw, senders = sys.argv[1], sys.argv[2:]
try:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
except OSError as e:
    print("packet socket refused:", e); sys.exit(0)
mac = s.getsockname()[4]
for ip in senders:
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(ip) + b"\0" * 6 + socket.inet_aton(gw)
    s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
print("sent", len(senders))
`

// floodScript opens n TCP connections at once and holds them: argv dst
// port n. It writes how many were established within 4 s to /tmp/flood.out.
const floodScript = `
import socket, select, sys, time
dst, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pending, up = [], []
for _ in range(n):
    s = socket.socket(); s.setblocking(False); s.connect_ex((dst, port)); pending.append(s)
deadline = time.time() + 4
while pending and time.time() < deadline:
    _, w, _ = select.select([], pending, [], 0.5)
    for s in w:
        pending.remove(s)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            up.append(s)
open("/tmp/flood.out", "w").write(str(len(up)))
time.sleep(300)
`

func writeScript(t *testing.T, sb *runtimetest.Sandbox, name, script string) {
	t.Helper()
	if err := sb.WriteFile(context.Background(), name, []byte(script)); err != nil {
		t.Fatal(err)
	}
}

// udpCollector receives datagrams on a port inside ns.
func udpCollector(t *testing.T, ns string) (int, <-chan string) {
	t.Helper()
	var pc net.PacketConn
	if err := network.InNetns(ns, func() (err error) { pc, err = net.ListenPacket("udp4", "0.0.0.0:0"); return err }); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 64)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 512)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case got <- string(buf[:n]):
			default:
			}
		}
	})
	t.Cleanup(func() { pc.Close(); wg.Wait() })
	return pc.LocalAddr().(*net.UDPAddr).Port, got
}

// TestAttackSpoofedSource: sandbox root sends raw IPv4 datagrams to the
// internet with another sandbox's, a LAN and an outside source address;
// none arrives, the sandbox's own does.
func TestAttackSpoofedSource(t *testing.T) {
	rt := namespaceDriver(t)
	world := newInternet(t)
	nw := newNetwork(t, network.Config{})
	sb := runtimetest.Start(t, rt, nw, runtimetest.Options{Internet: true})
	other := sb.Spec.Network.Address.Addr().Next().Next().Next().Next() // the next slot's sandbox
	port, got := udpCollector(t, world.NS())
	writeScript(t, sb, "/tmp/spoof.py", spoofScript)
	r := exec(t, sb, fmt.Sprintf("python3 /tmp/spoof.py %s %d %s 192.168.1.10 %s", world.Addr(), port, other, world.HostAddr()))
	t.Logf("spoof: %s%s", r.Stdout, r.Stderr)
	exec(t, sb, fmt.Sprintf("echo genuine > /dev/udp/%s/%d", world.Addr(), port))
	// Datagrams travel in order on this path: a spoofed one that got
	// through would have arrived before the genuine one.
	select {
	case m := <-got:
		if m != "genuine\n" {
			t.Errorf("the internet received %q first, want only the genuine datagram", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the genuine datagram never arrived")
	}
	mustStillWork(t, sb, world)
}

// TestAttackARPSpoofing: sandbox root broadcasts ARP requests on its veth
// claiming LAN, host and other sandboxes' addresses (which would poison
// or fill the host's neighbour table); the host learns none of them.
func TestAttackARPSpoofing(t *testing.T) {
	rt := namespaceDriver(t)
	world := newInternet(t)
	nw := newNetwork(t, network.Config{})
	sb := runtimetest.Start(t, rt, nw, runtimetest.Options{Internet: true})
	senders := []string{"192.168.1.1", world.HostAddr(), world.Addr(), sb.Spec.Network.Address.Addr().Next().Next().Next().Next().String()}
	for i := range 200 {
		senders = append(senders, fmt.Sprintf("10.66.%d.%d", i/250, 1+i%250))
	}
	writeScript(t, sb, "/tmp/arp.py", arpScript)
	r := exec(t, sb, "python3 /tmp/arp.py "+sb.Spec.Network.Gateway.String()+" "+strings.Join(senders, " "))
	t.Logf("arp: %s%s", r.Stdout, r.Stderr)
	link, err := netlink.LinkByName("roost-" + strconv.Itoa(sb.Slot))
	if err != nil {
		t.Fatal(err)
	}
	neigh, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range neigh {
		if ip, _ := netip.AddrFromSlice(n.IP.To4()); ip != sb.Spec.Network.Address.Addr() {
			t.Errorf("the host learnt %s on the sandbox's link from its ARP", ip)
		}
	}
	mustStillWork(t, sb, world)
}

// holdServer accepts TCP connections inside ns and holds them open
// until the client closes them.
func holdServer(t *testing.T, ns string) int {
	t.Helper()
	var ln net.Listener
	if err := network.InNetns(ns, func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:0"); return err }); err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			// It reads until the client closes, then closes too, as a
			// server does.
			wg.Go(func() { _, _ = io.Copy(io.Discard, c); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// TestAttackConnectionFlood: a sandbox opens far more connections than
// its limit at once; those beyond it fail, the host's conntrack table
// holds no more of its connections than the limit, and once it lets go a
// new connection works.
func TestAttackConnectionFlood(t *testing.T) {
	const limit, tries = 32, 200
	rt := namespaceDriver(t)
	world := newInternet(t)
	port := holdServer(t, world.NS())
	nw := newNetwork(t, network.Config{MaxConns: limit, NewConnRate: -1})
	sb := runtimetest.Start(t, rt, nw, runtimetest.Options{Internet: true})
	writeScript(t, sb, "/tmp/flood.py", floodScript)
	out := exec(t, sb, fmt.Sprintf("python3 /tmp/flood.py %s %d %d >/dev/null 2>&1 & for i in $(seq 100); do [ -s /tmp/flood.out ] && break; sleep 0.1; done; cat /tmp/flood.out", world.Addr(), port, tries)).Stdout
	up, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("flood output %q: %v", out, err)
	}
	if up > limit || up == 0 {
		t.Errorf("%d of %d connections established, want at most the limit %d (and some)", up, tries, limit)
	}
	flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	tracked := 0
	for _, f := range flows {
		if f.Forward.SrcIP.Equal(sb.Spec.Network.Address.Addr().AsSlice()) {
			tracked++
		}
	}
	if tracked > limit {
		t.Errorf("the host tracks %d connections of the sandbox, want at most %d", tracked, limit)
	}
	t.Logf("%d of %d connections up, %d tracked on the host (limit %d)", up, tries, tracked, limit)
	exec(t, sb, "pkill -f flood.py; true")
	mustStillWork(t, sb, world)
}

// TestAttackEgressFlood: a sandbox sends as fast as it can; its egress
// qdisc holds it to the configured rate (the shaper reports packets over
// its limit), sandbox root cannot remove the qdisc, and the sandbox
// still works.
func TestAttackEgressFlood(t *testing.T) {
	rt := namespaceDriver(t)
	world := newInternet(t)
	port := holdServer(t, world.NS())
	nw := newNetwork(t, network.Config{Egress: network.RateLimit{Rate: 2_000_000, Burst: 200_000}})
	sb := runtimetest.Start(t, rt, nw, runtimetest.Options{Internet: true})
	r := exec(t, sb, "tc qdisc del dev eth0 root; ip link set eth0 txqueuelen 100000")
	if r.ExitCode == 0 {
		t.Errorf("sandbox root changed its egress qdisc or link: %q", r.Stdout+r.Stderr)
	}
	exec(t, sb, fmt.Sprintf("head -c 4000000 /dev/zero > /dev/tcp/%s/%d", world.Addr(), port))
	var tbf *netlink.Tbf
	err := network.InNetns(sb.Spec.Network.Netns, func() error {
		link, err := netlink.LinkByName(sb.Spec.Network.Interface)
		if err != nil {
			return err
		}
		qs, err := netlink.QdiscList(link)
		for _, q := range qs {
			if q, ok := q.(*netlink.Tbf); ok {
				tbf = q
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case tbf == nil:
		t.Fatal("no tbf qdisc on the sandbox's interface after the flood")
	case tbf.Rate != 2_000_000:
		t.Errorf("tbf rate %d B/s, want 2000000", tbf.Rate)
	case tbf.Statistics == nil || tbf.Statistics.Queue == nil || tbf.Statistics.Queue.Overlimits == 0:
		t.Errorf("the shaper never held the flood back: %+v", tbf.Statistics)
	default:
		t.Logf("shaper: %d B sent, %d packets over the limit", tbf.Statistics.Basic.Bytes, tbf.Statistics.Queue.Overlimits)
	}
	mustStillWork(t, sb, world)
}

// TestAttackResolverOtherPorts: the sandbox's private resolver is open to
// it on port 53 only: names resolve through it, its web server (port 80,
// same address) stays closed.
func TestAttackResolverOtherPorts(t *testing.T) {
	rt := namespaceDriver(t)
	l, world := newLab(t), newInternet(t)
	resolver := l.targets["private 10/8"]
	nw := newNetwork(t, network.Config{Resolvers: []netip.Addr{resolver}})
	sb := runtimetest.Start(t, rt, nw, runtimetest.Options{Internet: true})
	if conf := exec(t, sb, "cat /etc/resolv.conf").Stdout; !strings.Contains(conf, "nameserver "+resolver.String()) {
		t.Errorf("resolv.conf %q does not name the resolver %s", conf, resolver)
	}
	want := netip.AddrFrom4(dnsAnswer).String()
	if out := exec(t, sb, "getent ahostsv4 anything.roost.test | head -1").Stdout; !strings.HasPrefix(out, want) {
		t.Errorf("lookup through the resolver gave %q, want %s", out, want)
	}
	if fetchAll(t, sb, "http://"+resolver.String()+"/")["http://"+resolver.String()+"/"] {
		t.Errorf("the sandbox reached port 80 of its resolver %s", resolver)
	}
	mustStillWork(t, sb, world)
}
