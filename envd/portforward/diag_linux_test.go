package portforward

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// sock_diag and /proc must agree on the listening sockets of this host.
func TestDiagMatchesProc(t *testing.T) {
	ln4, ln6 := listenBoth(t)
	diag, err := diagListeners()
	if err != nil {
		t.Fatal(err)
	}
	proc, err := readListeners("/proc")
	if err != nil {
		t.Fatal(err)
	}
	sortAP := func(s []netip.AddrPort) []netip.AddrPort {
		s = slices.Clone(s)
		slices.SortFunc(s, func(a, b netip.AddrPort) int { return a.Compare(b) })
		return slices.Compact(s)
	}
	d, p := sortAP(diag), sortAP(proc)
	for _, want := range []string{ln4.Addr().String(), ln6.Addr().String()} {
		if !slices.Contains(d, netip.MustParseAddrPort(want)) {
			t.Errorf("sock_diag misses %s: %v", want, d)
		}
	}
	if !slices.Equal(d, p) {
		t.Errorf("sock_diag %v\n/proc %v", d, p)
	}
}

// The one-walk request for both families must find both, on the kernels
// roost runs on (older ones fall back to a request per family).
func TestDiagBothFamiliesInOneDump(t *testing.T) {
	ln4, ln6 := listenBoth(t)
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	socks, err := diagDump(fd, tcpDiagGetSock, compatRequest())
	if err != nil {
		t.Fatalf("TCPDIAG_GETSOCK dump: %v", err)
	}
	for _, want := range []string{ln4.Addr().String(), ln6.Addr().String()} {
		if !slices.Contains(socks, netip.MustParseAddrPort(want)) {
			t.Errorf("dump misses %s: %v", want, socks)
		}
	}
}

func BenchmarkListenersDiag(b *testing.B) {
	for b.Loop() {
		if _, err := diagListeners(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkListenersProc(b *testing.B) {
	for b.Loop() {
		if _, err := readListeners("/proc"); err != nil {
			b.Fatal(err)
		}
	}
}

// listenBoth listens on a port of the IPv4 and of the IPv6 loopback,
// until t ends; it skips t where there is no IPv6 loopback.
func listenBoth(t *testing.T) (net.Listener, net.Listener) {
	t.Helper()
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln4.Close() })
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback")
	}
	t.Cleanup(func() { ln6.Close() })
	return ln4, ln6
}
