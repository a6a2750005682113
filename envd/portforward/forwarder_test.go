package portforward

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"maps"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMakePlan(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name      string
		socks     []string
		own       []string
		exclude   []uint16
		listening []string
		targets   map[uint16]string
	}{
		{name: "nothing"},
		{
			name:      "loopback only is forwarded",
			socks:     []string{"127.0.0.1:8080"},
			listening: []string{"127.0.0.1:8080"},
			targets:   map[uint16]string{8080: "127.0.0.1:8080"},
		},
		{
			name:      "any 127/8 address",
			socks:     []string{"127.0.0.53:53"},
			listening: []string{"127.0.0.53:53"},
			targets:   map[uint16]string{53: "127.0.0.53:53"},
		},
		{
			name:      "ipv6 loopback",
			socks:     []string{"[::1]:3000"},
			listening: []string{"[::1]:3000"},
			targets:   map[uint16]string{3000: "[::1]:3000"},
		},
		{
			name:      "ipv4-mapped loopback is unmapped",
			socks:     []string{"[::ffff:127.0.0.1]:8888"},
			listening: []string{"127.0.0.1:8888"},
			targets:   map[uint16]string{8888: "127.0.0.1:8888"},
		},
		{
			name:      "ipv4 preferred over ipv6, 127.0.0.1 first",
			socks:     []string{"[::1]:5173", "127.0.0.2:5173", "127.0.0.1:5173"},
			listening: []string{"127.0.0.1:5173", "127.0.0.2:5173", "[::1]:5173"},
			targets:   map[uint16]string{5173: "127.0.0.1:5173"},
		},
		{
			name:      "wildcards are reachable already",
			socks:     []string{"0.0.0.0:22", "[::]:80", "[::ffff:0.0.0.0]:81"},
			listening: []string{"0.0.0.0:22", "[::]:80", "0.0.0.0:81"},
		},
		{
			name:      "loopback beside a wildcard is not forwarded",
			socks:     []string{"127.0.0.1:8080", "[::]:8080"},
			listening: []string{"127.0.0.1:8080", "[::]:8080"},
		},
		{
			name:      "loopback beside an external address is not forwarded",
			socks:     []string{"127.0.0.1:8080", "10.11.0.2:8080"},
			listening: []string{"10.11.0.2:8080", "127.0.0.1:8080"},
		},
		{
			name:      "excluded",
			socks:     []string{"127.0.0.1:49983", "127.0.0.1:8000"},
			exclude:   []uint16{49983},
			listening: []string{"127.0.0.1:8000", "127.0.0.1:49983"},
			targets:   map[uint16]string{8000: "127.0.0.1:8000"},
		},
		{
			name:      "own forwarding listeners are neither listed nor a reason not to forward",
			socks:     []string{"127.0.0.1:8080", "10.11.0.2:8080", "10.12.0.2:8080"},
			own:       []string{"10.11.0.2:8080", "10.12.0.2:8080"},
			listening: []string{"127.0.0.1:8080"},
			targets:   map[uint16]string{8080: "127.0.0.1:8080"},
		},
		{
			name:      "own listener of a port whose server left",
			socks:     []string{"10.11.0.2:8080"},
			own:       []string{"10.11.0.2:8080"},
			listening: []string{},
		},
		{
			name:      "duplicates, sorted by port then address",
			socks:     []string{"127.0.0.1:9000", "0.0.0.0:22", "127.0.0.1:9000", "[::ffff:127.0.0.1]:9000", "[::]:22", "0.0.0.0:22"},
			listening: []string{"0.0.0.0:22", "[::]:22", "127.0.0.1:9000"},
			targets:   map[uint16]string{9000: "127.0.0.1:9000"},
		},
		{
			name:      "port zero ignored",
			socks:     []string{"127.0.0.1:0"},
			listening: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var socks []netip.AddrPort
			for _, s := range tt.socks {
				socks = append(socks, ap(s))
			}
			own := map[netip.AddrPort]bool{}
			for _, s := range tt.own {
				own[ap(s)] = true
			}
			exclude := map[uint16]bool{}
			for _, p := range tt.exclude {
				exclude[p] = true
			}
			p := makePlan(socks, own, exclude)

			var listening []string
			for _, s := range p.listening {
				listening = append(listening, s.String())
			}
			if len(tt.listening) > 0 || len(listening) > 0 {
				if !slices.Equal(listening, tt.listening) {
					t.Errorf("listening:\n got %v\nwant %v", listening, tt.listening)
				}
			}
			targets := map[uint16]string{}
			for port, target := range p.targets {
				targets[port] = target.String()
			}
			if tt.targets == nil {
				tt.targets = map[uint16]string{}
			}
			if !maps.Equal(targets, tt.targets) {
				t.Errorf("targets:\n got %v\nwant %v", targets, tt.targets)
			}
		})
	}
}

// TestRunReportsPorts runs a Forwarder over a fixture in which nothing is
// forwardable, so it lists ports without listening anywhere.
func TestRunReportsPorts(t *testing.T) {
	if binaryIsBigEndian() {
		t.Skip("the fixture is as a little-endian kernel prints it")
	}
	root := t.TempDir()
	writeProc(t, root, "tcp", tcpHeader+
		tcpLine(0, "00000000:0016", "00000000:0000", "0A")+ // 0.0.0.0:22
		tcpLine(1, "0100007F:C34F", "00000000:0000", "0A")+ // 127.0.0.1:49999, excluded
		tcpLine(2, "0100007F:1F90", "00000000:0000", "0A")+ // 127.0.0.1:8080 ...
		tcpLine(3, "020B0A0A:1F90", "00000000:0000", "0A")+ // ... and 10.10.11.2:8080
		tcpLine(4, "0100007F:1F90", "0100007F:D431", "01")) // a connection
	writeProc(t, root, "tcp6", tcp6Header+
		tcpLine(0, "00000000000000000000000000000000:0050", "00000000000000000000000000000000:0000", "0A")+ // [::]:80
		tcpLine(1, "00000000000000000000000001000000:C34F", "00000000000000000000000000000000:0000", "0A")) // [::1]:49999, excluded

	f := New(Config{ProcRoot: root, Exclude: []uint16{49999}, Interval: 10 * time.Millisecond}, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if got := f.Ports(); got == nil || len(got) != 0 {
		t.Fatalf("Ports before Run = %#v, want empty and non-nil", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Kick() // a forwarder starts idle; a sandbox's first request kicks
	waitScans(t, f, 1)

	want := []Port{
		{Port: 22, Address: "0.0.0.0"},
		{Port: 80, Address: "::"},
		{Port: 8080, Address: "10.10.11.2"},
		{Port: 8080, Address: "127.0.0.1"},
		{Port: 49999, Address: "127.0.0.1"},
		{Port: 49999, Address: "::1"},
	}
	if got := f.Ports(); !slices.Equal(got, want) {
		t.Errorf("Ports:\n got %+v\nwant %+v", got, want)
	}
	b, err := json.Marshal(f.Ports()[:1])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `[{"port":22,"address":"0.0.0.0","forwarded":false}]`; got != want {
		t.Errorf("JSON = %s, want %s", got, want)
	}

	if err := f.Run(ctx); err == nil {
		t.Error("second Run: no error")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if got := f.Ports(); len(got) != 0 {
		t.Errorf("Ports after Run = %v, want empty", got)
	}
}

// TestRunScanFailure checks that a missing table is logged once, not per scan.
func TestRunScanFailure(t *testing.T) {
	var logs syncBuffer
	f := New(Config{ProcRoot: filepath.Join(t.TempDir(), "nothing"), Interval: time.Millisecond}, slog.New(slog.NewTextHandler(&logs, nil)))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	f.Kick() // a forwarder starts idle; a sandbox's first request kicks
	waitScans(t, f, 5)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if n := strings.Count(logs.String(), "port scan failed"); n != 1 {
		t.Errorf("logged %d scan failures, want 1:\n%s", n, logs.String())
	}
	if got := f.Ports(); len(got) != 0 {
		t.Errorf("Ports = %v, want empty", got)
	}
}

func TestNewDefaults(t *testing.T) {
	f := New(Config{}, nil)
	if f.interval != defaultInterval || f.procRoot != "/proc" || f.log == nil {
		t.Errorf("defaults: interval %v, procRoot %q, log %v", f.interval, f.procRoot, f.log)
	}
}

func TestExternalAddrs(t *testing.T) {
	addrs, err := externalAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if !a.Is4() || a.IsLoopback() || a.IsUnspecified() {
			t.Errorf("external address %v", a)
		}
	}
	if !slices.IsSortedFunc(addrs, netip.Addr.Compare) {
		t.Errorf("not sorted: %v", addrs)
	}
}

// waitScans waits until n more scans have completed. Two are enough for a
// change made before the call to be seen: one may have been under way.
func waitScans(t *testing.T, f *Forwarder, n uint64) {
	t.Helper()
	waitScanned(t, f, f.scans.Load()+n)
}

// runIdle runs a forwarder over a proc table holding tcp, scanning
// every 10 ms when active and every hour when idle, until the test ends
// or stop; it returns once the first scan is done.
func runIdle(t *testing.T, tcp string) (f *Forwarder, stop func()) {
	t.Helper()
	root := t.TempDir()
	writeProc(t, root, "tcp", tcp)
	f = New(Config{ProcRoot: root, Interval: 10 * time.Millisecond, IdleInterval: time.Hour}, nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	stop = sync.OnceFunc(func() {
		cancel()
		<-done
	})
	t.Cleanup(stop)
	waitScanned(t, f, 1)
	return f, stop
}

// waitScanned waits until the forwarder completed want scans since it
// started: a forwarder idle from its start may scan once in an hour.
func waitScanned(t *testing.T, f *Forwarder, want uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for f.scans.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("forwarder did not complete %d scans", want)
		}
		time.Sleep(time.Millisecond)
	}
}

func binaryIsBigEndian() bool {
	return binary.NativeEndian.Uint16([]byte{0, 1}) == 1
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestScanIntervalFollowsActivity(t *testing.T) {
	f := New(Config{Interval: 100 * time.Millisecond, IdleInterval: time.Second}, nil)
	now := time.Now()
	f.lastActive.Store(now.Add(-2 * activeWindow).UnixNano())
	if got := f.nextInterval(now); got != time.Second {
		t.Errorf("idle: %v, want the idle interval", got)
	}
	f.Kick()
	if got := f.nextInterval(time.Now()); got != 100*time.Millisecond {
		t.Errorf("after a kick: %v, want the active interval", got)
	}
	f = New(Config{Interval: 100 * time.Millisecond, IdleInterval: 5 * time.Second}, nil)
	for _, tt := range []struct{ quiet, want time.Duration }{
		{0, 100 * time.Millisecond},
		{activeWindow - time.Millisecond, 100 * time.Millisecond},
		{16 * time.Second, 2 * time.Second}, // an eighth of the quiet time
		{time.Hour, 5 * time.Second},
	} {
		f.lastActive.Store(now.Add(-tt.quiet).UnixNano())
		if got := f.nextInterval(now); got != tt.want {
			t.Errorf("after %v of quiet: %v, want %v", tt.quiet, got, tt.want)
		}
	}
	if got := New(Config{}, nil); got.interval != defaultInterval || got.idleInterval != defaultIdleInterval {
		t.Errorf("defaults: %v %v", got.interval, got.idleInterval)
	}
}

// TestKickEndsIdleWait checks that a Kick during an idle wait (an hour
// here) brings the next scan forward to about Interval after the last.
func TestKickEndsIdleWait(t *testing.T) {
	f, _ := runIdle(t, tcpHeader)
	f.lastActive.Store(time.Now().Add(-2 * activeWindow).UnixNano())
	// The wait after the next scan at the latest is idle.
	deadline := time.Now().Add(30 * time.Second)
	for !f.idle.Load() {
		if time.Now().After(deadline) {
			t.Fatal("forwarder never waited idle")
		}
		time.Sleep(time.Millisecond)
	}
	before := f.scans.Load()
	f.Kick()
	waitScans(t, f, 1)
	if got := f.nextInterval(time.Now()); got != 10*time.Millisecond {
		t.Errorf("after the kick: %v, want the active interval", got)
	}
	if f.scans.Load() <= before {
		t.Error("no scan after the kick")
	}
}

// TestPortsNowScansAfterTheCall checks that PortsNow reports a server
// that started listening after the last scan, while the forwarder waits
// idle (an hour here), and that it answers before Run and after it.
func TestPortsNowScansAfterTheCall(t *testing.T) {
	before := New(Config{ProcRoot: t.TempDir()}, nil)
	if ports, err := before.PortsNow(t.Context()); err != nil || len(ports) != 0 {
		t.Fatalf("before Run: %v, %v", ports, err)
	}
	f, stop := runIdle(t, tcpHeader)
	root := f.procRoot
	f.lastActive.Store(time.Now().Add(-2 * activeWindow).UnixNano())
	for !f.idle.Load() {
		time.Sleep(time.Millisecond)
	}
	writeProc(t, root, "tcp", tcpHeader+tcpLine(0, "00000000:1F90", "00000000:0000", "0A")) // 0.0.0.0:8080
	ports, err := f.PortsNow(t.Context())
	if err != nil || len(ports) != 1 || ports[0].Port != 8080 {
		t.Fatalf("PortsNow after a server started: %v, %v", ports, err)
	}
	stop()
	if ports, err := f.PortsNow(t.Context()); err != nil || len(ports) != 0 {
		t.Fatalf("after Run: %v, %v", ports, err)
	}
}

// TestStartsIdle checks that what the first scan finds (envd's own port,
// say) is no sign of activity: a sandbox no one uses, a warm pool's,
// scans every IdleInterval from its start.
func TestStartsIdle(t *testing.T) {
	f, _ := runIdle(t, tcpHeader+tcpLine(0, "00000000:C34F", "00000000:0000", "0A")) // 0.0.0.0:49999
	if ports := f.Ports(); len(ports) != 1 {
		t.Fatalf("first scan: %v", ports)
	}
	if got := f.nextInterval(time.Now()); got != time.Hour {
		t.Errorf("after the first scan: %v, want the idle interval", got)
	}
	time.Sleep(100 * time.Millisecond)
	if n := f.scans.Load(); n != 1 {
		t.Errorf("%d scans in 100ms from the start, want 1", n)
	}
}
