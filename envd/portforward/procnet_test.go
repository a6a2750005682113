package portforward

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Lines as a little-endian kernel prints them, trailing spaces included.
const (
	tcpHeader  = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     \n"
	tcp6Header = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tail       = " 00000000:00000000 00:00000000 00000000     0        0 4541 1 0000000007f4d707 100 0 0 10 0                      \n"
)

func tcpLine(slot int, local, remote, state string) string {
	return fmt.Sprintf("%4d: %s %s %s%s", slot, local, remote, state, tail)
}

func TestParseProcNet(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name string
		text string
		want []netip.AddrPort
	}{
		{name: "empty", text: ""},
		{name: "header only", text: tcpHeader},
		{
			name: "ipv4",
			text: tcpHeader +
				tcpLine(0, "0100007F:1F90", "00000000:0000", "0A") + // 127.0.0.1:8080
				tcpLine(1, "00000000:0016", "00000000:0000", "0A") + // 0.0.0.0:22
				tcpLine(2, "0A00A8C0:C350", "00000000:0000", "0A") + // 192.168.0.10:50000
				tcpLine(3, "3500007F:0035", "00000000:0000", "0A") + // 127.0.0.53:53
				tcpLine(4, "0100007F:FFFF", "00000000:0000", "0A"), // highest port
			want: []netip.AddrPort{
				ap("127.0.0.1:8080"), ap("0.0.0.0:22"), ap("192.168.0.10:50000"),
				ap("127.0.0.53:53"), ap("127.0.0.1:65535"),
			},
		},
		{
			name: "only LISTEN",
			text: tcpHeader +
				tcpLine(0, "0100007F:1F90", "0100007F:D431", "01") + // ESTABLISHED
				tcpLine(1, "0100007F:1F90", "0100007F:D432", "06") + // TIME_WAIT
				tcpLine(2, "0100007F:1F91", "00000000:0000", "07") + // CLOSE
				tcpLine(3, "0100007F:1F92", "00000000:0000", "0a"), // lower-case hex
			want: []netip.AddrPort{ap("127.0.0.1:8082")},
		},
		{
			name: "ipv6",
			text: tcp6Header +
				tcpLine(0, "00000000000000000000000001000000:1F90", "00000000000000000000000000000000:0000", "0A") +
				tcpLine(1, "00000000000000000000000000000000:0016", "00000000000000000000000000000000:0000", "0A") +
				tcpLine(2, "B80D0120000000000000000001000000:01BB", "00000000000000000000000000000000:0000", "0A") +
				tcpLine(3, "000080FE00000000FF005A02563412FE:0050", "00000000000000000000000000000000:0000", "0A"),
			want: []netip.AddrPort{
				ap("[::1]:8080"), ap("[::]:22"), ap("[2001:db8::1]:443"), ap("[fe80::25a:ff:fe12:3456]:80"),
			},
		},
		{
			name: "ipv4-mapped",
			text: tcp6Header +
				tcpLine(0, "0000000000000000FFFF00000100007F:1F90", "00000000000000000000000000000000:0000", "0A") +
				tcpLine(1, "0000000000000000FFFF000000000000:1F91", "00000000000000000000000000000000:0000", "0A"),
			want: []netip.AddrPort{ap("[::ffff:127.0.0.1]:8080"), ap("[::ffff:0.0.0.0]:8081")},
		},
		{
			name: "malformed lines skipped",
			text: tcpHeader +
				"\n" +
				"      \n" +
				"   0: 0100007F:1F90\n" + // truncated
				"   0: 0100007F:1F90 00000000:0000\n" + // no state
				tcpLine(1, "0100007G:1F90", "00000000:0000", "0A") + // bad hex
				tcpLine(2, "100007F:1F90", "00000000:0000", "0A") + // 7 digits
				tcpLine(3, "000000000100007F:1F90", "00000000:0000", "0A") + // 16 digits
				tcpLine(4, "0100007F:11F90", "00000000:0000", "0A") + // 5-digit port
				tcpLine(5, "0100007F:", "00000000:0000", "0A") + // no port
				tcpLine(6, "0100007F", "00000000:0000", "0A") + // no colon
				tcpLine(7, "0100007F:1F90", "00000000:0000", "A") + // 1-digit state
				tcpLine(8, "0100007F:1F90", "00000000:0000", "00A") + // 3-digit state
				tcpLine(9, "0100007F:-1", "00000000:0000", "0A") + // sign
				"   x: 0100007F:1F90 00000000:0000 0A\n" + // slot not a number
				"   : 0100007F:1F90 00000000:0000 0A\n" + // empty slot
				"  10  0100007F:1F90 00000000:0000 0A\n" + // slot without colon
				"\x00\xff\xfe garbage \x01\n" +
				strings.Repeat("A", 100000) + "\n" +
				tcpLine(11, "0100007F:1F93", "00000000:0000", "0A"), // the good one
			want: []netip.AddrPort{ap("127.0.0.1:8083")},
		},
		{
			name: "tabs, CRLF-free last line without newline",
			text: "\t0:\t0100007F:0050\t00000000:0000\t0A",
			want: []netip.AddrPort{ap("127.0.0.1:80")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parseProcNet([]byte(tt.text), binary.LittleEndian)
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseProcNet:\n got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestParseProcNetBigEndian(t *testing.T) {
	// A big-endian kernel prints each word in network order.
	text := tcpHeader +
		tcpLine(0, "7F000001:1F90", "00000000:0000", "0A") +
		tcpLine(1, "00000000000000000000000000000001:0016", "00000000000000000000000000000000:0000", "0A")
	got := parseProcNet([]byte(text), binary.BigEndian)
	want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8080"), netip.MustParseAddrPort("[::1]:22")}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestReadListeners(t *testing.T) {
	root := t.TempDir()
	writeProc(t, root, "tcp", tcpHeader+tcpLine(0, "0100007F:1F90", "00000000:0000", "0A"))

	// No tcp6 table: IPv6 disabled, not an error.
	got, err := readListeners(root)
	if err != nil {
		t.Fatalf("readListeners without tcp6: %v", err)
	}
	if want := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:8080")}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}

	writeProc(t, root, "tcp6", tcp6Header+tcpLine(0, "00000000000000000000000001000000:1F90", "00000000000000000000000000000000:0000", "0A"))
	got, err = readListeners(root)
	if err != nil {
		t.Fatalf("readListeners: %v", err)
	}
	if len(got) != 2 || got[1] != netip.MustParseAddrPort("[::1]:8080") {
		t.Errorf("got %v, want 127.0.0.1:8080 and [::1]:8080", got)
	}

	if _, err := readListeners(filepath.Join(root, "missing")); err == nil {
		t.Error("readListeners of a missing tcp table: no error")
	}
}

func TestReadListenersLive(t *testing.T) {
	if _, err := os.Stat("/proc/net/tcp"); err != nil {
		t.Skip("no /proc/net/tcp on this system")
	}
	if _, err := readListeners("/proc"); err != nil {
		t.Fatalf("readListeners(/proc): %v", err)
	}
}

func writeProc(t *testing.T, root, name, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "net", name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// formatLine prints ap the way the kernel would, in the given byte order.
func formatLine(ap netip.AddrPort, order binary.ByteOrder) string {
	var hex strings.Builder
	b := ap.Addr().AsSlice()
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&hex, "%08X", order.Uint32(b[i:]))
	}
	return tcpLine(0, fmt.Sprintf("%s:%04X", hex.String(), ap.Port()), "00000000:0000", "0A")
}

func FuzzParseProcNet(f *testing.F) {
	f.Add([]byte(tcpHeader + tcpLine(0, "0100007F:1F90", "00000000:0000", "0A")))
	f.Add([]byte(tcp6Header + tcpLine(0, "0000000000000000FFFF00000100007F:1F90", "00000000000000000000000000000000:0000", "0A")))
	f.Add([]byte(tcpLine(0, "00000000000000000000000001000000:0016", "0:0", "0A")))
	f.Add([]byte("   0: 0100007F:1F90 00000000:0000 0A\n   1: zz\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
			for _, ap := range parseProcNet(data, order) {
				if !ap.Addr().IsValid() || ap.Addr().Zone() != "" || !(ap.Addr().Is4() || ap.Addr().Is6()) {
					t.Fatalf("parsed invalid address %v", ap)
				}
				// What was parsed prints back to a line that parses the same.
				again := parseProcNet([]byte(formatLine(ap, order)), order)
				if len(again) != 1 || again[0] != ap {
					t.Fatalf("round trip of %v gave %v", ap, again)
				}
			}
		}
	})
}

func BenchmarkParseProcNet(b *testing.B) {
	// A busy sandbox: a few listeners among a thousand connections.
	var sb strings.Builder
	sb.WriteString(tcpHeader)
	for i := range 1000 {
		state := "01"
		if i%100 == 0 {
			state = "0A"
		}
		sb.WriteString(tcpLine(i, fmt.Sprintf("0100007F:%04X", 1024+i), "0100007F:D431", state))
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		parseProcNet(data, binary.LittleEndian)
	}
}
