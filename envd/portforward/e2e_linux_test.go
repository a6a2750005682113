package portforward

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The end-to-end test runs a real Forwarder in a network namespace of its
// own, so that what it forwards, and every byte the test sends, stays in a
// namespace the test created. Go cannot move a whole process into another
// namespace once threads exist, so TestEndToEnd re-runs this test binary
// under `ip netns exec` to run TestInNamespace there.

const (
	envAddr = "ROOST_PORTFORWARD_TEST_ADDR" // external address inside the namespace
	envDev  = "ROOST_PORTFORWARD_TEST_DEV"  // the interface that carries it

	testAddr = "192.0.2.10" // TEST-NET-1 (RFC 5737)
	lateAddr = "192.0.2.11"
)

func TestEndToEnd(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip to create a network namespace")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	// Not "roost-": the agent prunes namespaces with that prefix, and its
	// tests may run at the same time as this one.
	ns := "pftest-" + strings.ToLower(rand.Text()[:10])
	ip(t, "netns", "add", ns)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns, err, out)
		}
	})
	// Both ends of a veth pair inside the namespace: the dummy driver is not
	// always built, and traffic to a local address never leaves anyway.
	ip(t, "-n", ns, "link", "set", "lo", "up")
	ip(t, "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
	ip(t, "-n", ns, "addr", "add", testAddr+"/24", "dev", "eth0")
	ip(t, "-n", ns, "link", "set", "eth0", "up")
	ip(t, "-n", ns, "link", "set", "eth1", "up")

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, exe,
		"-test.run=^TestInNamespace$", "-test.v", "-test.count=1", "-test.timeout=4m")
	cmd.Env = append(os.Environ(), envAddr+"="+testAddr, envDev+"=eth0")
	out, err := cmd.CombinedOutput()
	t.Logf("in namespace %s:\n%s", ns, out)
	if err != nil {
		t.Fatalf("test in namespace: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestInNamespace") {
		t.Fatal("TestInNamespace did not pass in the namespace")
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestInNamespace is the namespace side of TestEndToEnd; on its own it skips.
func TestInNamespace(t *testing.T) {
	addr, dev := os.Getenv(envAddr), os.Getenv(envDev)
	if addr == "" {
		t.Skip("runs only inside the namespace TestEndToEnd creates")
	}
	ext := netip.MustParseAddr(addr)
	if got, err := externalAddrs(); err != nil || len(got) != 1 || got[0] != ext {
		t.Fatalf("externalAddrs = %v, %v; want [%v]", got, err, ext)
	}

	// A loopback server on a port the forwarder must leave alone, as envd's
	// own port.
	excluded := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)

	f := New(Config{Exclude: []uint16{excluded.Port()}}, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Kick() // a forwarder starts idle; a sandbox's first request kicks

	at := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(ext, port) }

	t.Run("loopback server forwarded, then stopped", func(t *testing.T) {
		start := time.Now()
		srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
		reachable := waitDial(t, at(srv.Port()))
		t.Logf("reachable on %v %v after the server started listening (scan interval %v)", at(srv.Port()), reachable.Sub(start), defaultInterval)

		// Deterministically: one full scan after the server listens suffices.
		srv2 := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
		waitScans(t, f, 2)
		checkEcho(t, dial(t, at(srv2.Port())), "hello from outside")
		checkPort(t, f, srv2.Port(), "127.0.0.1", true)
		checkNoPort(t, f, srv2.Port(), addr) // the forwarding listener is not listed

		srv2.Close()
		waitScans(t, f, 2)
		checkRefused(t, at(srv2.Port()))
		checkNoPort(t, f, srv2.Port(), "127.0.0.1")
	})

	t.Run("open connections closed when the server goes away", func(t *testing.T) {
		srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
		waitScans(t, f, 2)
		c := dial(t, at(srv.Port()))
		checkEcho(t, c, "before")
		srv.CloseListener() // the server's side of c stays open
		waitScans(t, f, 2)
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after the server stopped listening")
		}
		checkRefused(t, at(srv.Port()))
	})

	t.Run("wildcard and external listed, not forwarded", func(t *testing.T) {
		wild := serve(t, listen(t, "tcp4", "0.0.0.0:0"), echo)
		extSrv := serve(t, listen(t, "tcp4", addr+":0"), echo)
		// Loopback and external on one port: reachable already.
		both := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
		bothExt := serve(t, listen(t, "tcp4", net.JoinHostPort(addr, strconv.Itoa(int(both.Port())))), echo)
		waitScans(t, f, 2)
		checkPort(t, f, wild.Port(), "0.0.0.0", false)
		checkPort(t, f, extSrv.Port(), addr, false)
		checkPort(t, f, both.Port(), "127.0.0.1", false)
		checkPort(t, f, bothExt.Port(), addr, false)
		checkEcho(t, dial(t, at(wild.Port())), "served by the wildcard itself")
	})

	t.Run("excluded port not forwarded", func(t *testing.T) {
		waitScans(t, f, 2)
		checkPort(t, f, excluded.Port(), "127.0.0.1", false)
		checkRefused(t, at(excluded.Port()))
	})

	t.Run("ipv6 loopback forwarded to the ipv4 address", func(t *testing.T) {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback in the namespace: %v", err)
		}
		srv := serve(t, ln, echo)
		waitScans(t, f, 2)
		checkPort(t, f, srv.Port(), "::1", true)
		checkEcho(t, dial(t, at(srv.Port())), "to ::1")
	})

	t.Run("ipv4-mapped loopback forwarded", func(t *testing.T) {
		srv := serve(t, listenMapped(t), echo)
		waitScans(t, f, 2)
		checkPort(t, f, srv.Port(), "127.0.0.1", true)
		checkEcho(t, dial(t, at(srv.Port())), "to ::ffff:127.0.0.1")
	})

	t.Run("32 MiB both ways", func(t *testing.T) {
		srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
		waitScans(t, f, 2)
		checkLargeTransfer(t, dial(t, at(srv.Port())), 32<<20)
	})

	t.Run("half-close", func(t *testing.T) {
		srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), replyAtEOF)
		waitScans(t, f, 2)
		checkHalfClose(t, dial(t, at(srv.Port())))
	})

	t.Run("address configured late is picked up", func(t *testing.T) {
		srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
		late := netip.AddrPortFrom(netip.MustParseAddr(lateAddr), srv.Port())
		ip(t, "addr", "add", lateAddr+"/24", "dev", dev)
		t.Cleanup(func() { exec.Command("ip", "addr", "del", lateAddr+"/24", "dev", dev).Run() })
		waitScans(t, f, 2)
		checkEcho(t, dial(t, late), "to the late address")
		checkEcho(t, dial(t, at(srv.Port())), "to the first address")

		ip(t, "addr", "del", lateAddr+"/24", "dev", dev)
		waitScans(t, f, 2)
		checkPort(t, f, srv.Port(), "127.0.0.1", true)
		checkEcho(t, dial(t, at(srv.Port())), "first address still forwarded")
		ip(t, "addr", "add", lateAddr+"/24", "dev", dev)
		waitScans(t, f, 2)
		checkEcho(t, dial(t, late), "late address back")
	})

	// Run's return closes every forwarding listener.
	srv := serve(t, listen(t, "tcp4", "127.0.0.1:0"), echo)
	waitScans(t, f, 2)
	c := dial(t, at(srv.Port()))
	checkEcho(t, c, "before Run returns")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	checkRefused(t, at(srv.Port()))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("forwarded connection open after Run returned")
	}
	if got := f.Ports(); len(got) != 0 {
		t.Errorf("Ports after Run = %v", got)
	}
	checkNoGoroutines(t, "portforward.(*forward)", "portforward.(*Forwarder)", "portforward.splice", "portforward.pipe")
}

// checkNoGoroutines fails if a goroutine still runs a function matching one
// of funcs. A goroutine that has just finished may linger in the dump for a
// moment, so it looks again before failing.
func checkNoGoroutines(t *testing.T, funcs ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	var leaked string
	for range 100 {
		leaked = ""
		dump := string(buf[:runtime.Stack(buf, true)])
		for g := range strings.SplitSeq(dump, "\n\n") {
			for _, fn := range funcs {
				if strings.Contains(g, fn) && !strings.Contains(g, "checkNoGoroutines") {
					leaked = g
				}
			}
		}
		if leaked == "" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("goroutine left running after Run returned:\n%s", leaked)
}

// waitDial dials until the forward answers, and returns when it did.
func waitDial(t *testing.T, addr netip.AddrPort) time.Time {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr.String(), time.Second)
		if err == nil {
			defer c.Close()
			checkEcho(t, c, "ping")
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v never became reachable: %v", addr, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func checkRefused(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr.String(), 10*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("dial %v succeeded; want no listener", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %v: %v; want refused", addr, err)
	}
}

func checkPort(t *testing.T, f *Forwarder, port uint16, addr string, forwarded bool) {
	t.Helper()
	for _, p := range f.Ports() {
		if p.Port == port && p.Address == addr {
			if p.Forwarded != forwarded {
				t.Fatalf("port %d on %s: forwarded %v, want %v; all: %+v", port, addr, p.Forwarded, forwarded, f.Ports())
			}
			return
		}
	}
	t.Fatalf("port %d on %s not listed: %+v", port, addr, f.Ports())
}

func checkNoPort(t *testing.T, f *Forwarder, port uint16, addr string) {
	t.Helper()
	for _, p := range f.Ports() {
		if p.Port == port && p.Address == addr {
			t.Fatalf("port %d on %s listed: %+v", port, addr, f.Ports())
		}
	}
}

// listenMapped listens on ::ffff:127.0.0.1, which Go's net package would
// turn into an IPv4 socket; it has to be an IPv6 one to test the tcp6 table.
func listenMapped(t *testing.T) net.Listener {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no IPv6 sockets: %v", err)
	}
	file := os.NewFile(uintptr(fd), "mapped-listener")
	defer file.Close()
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0); err != nil {
		t.Fatalf("clear IPV6_V6ONLY: %v", err)
	}
	sa := &syscall.SockaddrInet6{Addr: netip.MustParseAddr("::ffff:127.0.0.1").As16()}
	if err := syscall.Bind(fd, sa); err != nil {
		t.Fatalf("bind ::ffff:127.0.0.1: %v", err)
	}
	if err := syscall.Listen(fd, 16); err != nil {
		t.Fatalf("listen: %v", err)
	}
	ln, err := net.FileListener(file)
	if err != nil {
		t.Fatalf("FileListener: %v", err)
	}
	return ln
}
