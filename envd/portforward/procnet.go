package portforward

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
)

// stateListen is TCP_LISTEN as /proc/net/tcp prints it ("0A").
const stateListen = 0x0A

// readListeners returns the local addresses of all listening TCP sockets in
// the network namespace procRoot describes. A missing tcp6 table (IPv6
// disabled) is not an error.
func readListeners(procRoot string) ([]netip.AddrPort, error) {
	v4, err := os.ReadFile(filepath.Join(procRoot, "net", "tcp"))
	if err != nil {
		return nil, fmt.Errorf("read tcp table: %w", err)
	}
	out := parseProcNet(v4, binary.NativeEndian)
	v6, err := os.ReadFile(filepath.Join(procRoot, "net", "tcp6"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read tcp6 table: %w", err)
	default:
		out = append(out, parseProcNet(v6, binary.NativeEndian)...)
	}
	return out, nil
}

// parseProcNet returns the local address of every LISTEN socket in the text
// of /proc/net/tcp or /proc/net/tcp6, in the order of the table. The kernel
// prints an address as 32-bit words, each in the host's byte order, so order
// must be the byte order of the machine that produced data. The header and
// any line that is not well formed are skipped; it never fails.
func parseProcNet(data []byte, order binary.ByteOrder) []netip.AddrPort {
	var out []netip.AddrPort
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if ap, ok := parseLine(line, order); ok {
			out = append(out, ap)
		}
	}
	return out
}

// parseLine parses one socket line:
//
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 ...
func parseLine(line []byte, order binary.ByteOrder) (netip.AddrPort, bool) {
	sl, rest := field(line)
	local, rest := field(rest)
	_, rest = field(rest) // remote address
	st, _ := field(rest)
	// The slot is a decimal number and a colon; this also rejects the header.
	if len(sl) < 2 || sl[len(sl)-1] != ':' || !isDecimal(sl[:len(sl)-1]) {
		return netip.AddrPort{}, false
	}
	if len(st) != 2 {
		return netip.AddrPort{}, false
	}
	if state, ok := hexUint(st); !ok || state != stateListen {
		return netip.AddrPort{}, false
	}
	host, port, ok := bytes.Cut(local, []byte{':'})
	if !ok || len(port) == 0 || len(port) > 4 {
		return netip.AddrPort{}, false
	}
	p, ok := hexUint(port)
	if !ok {
		return netip.AddrPort{}, false
	}
	addr, ok := parseHexAddr(host, order)
	if !ok {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, uint16(p)), true
}

// parseHexAddr decodes an address of 8 (IPv4) or 32 (IPv6) hex digits, each
// group of 8 being one 32-bit word in the given byte order.
func parseHexAddr(h []byte, order binary.ByteOrder) (netip.Addr, bool) {
	switch len(h) {
	case 8:
		var b [4]byte
		w, ok := hexUint(h)
		if !ok {
			return netip.Addr{}, false
		}
		order.PutUint32(b[:], uint32(w))
		return netip.AddrFrom4(b), true
	case 32:
		var b [16]byte
		for i := range 4 {
			w, ok := hexUint(h[i*8 : i*8+8])
			if !ok {
				return netip.Addr{}, false
			}
			order.PutUint32(b[i*4:], uint32(w))
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// hexUint decodes up to 16 hex digits without allocating.
func hexUint(s []byte) (uint64, bool) {
	if len(s) == 0 || len(s) > 16 {
		return 0, false
	}
	var v uint64
	for _, c := range s {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		v = v<<4 | uint64(d)
	}
	return v, true
}

func isDecimal(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// field splits off the first space- or tab-separated field of s.
func field(s []byte) (f, rest []byte) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	s = s[i:]
	j := 0
	for j < len(s) && s[j] != ' ' && s[j] != '\t' {
		j++
	}
	return s[:j], s[j:]
}
