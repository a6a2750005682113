package proc

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// NetDev reads the byte counters of the network namespace a process runs
// in, from its /proc/<pid>/net/dev, which it keeps open: each Read is one
// pread(2). The open file holds the namespace: close it when the sandbox
// goes. Not safe for concurrent use.
type NetDev struct {
	f      *os.File
	ifname string
	buf    []byte
}

// OpenNetDev opens the counters of interface ifname in pid's network
// namespace; "" sums every interface but loopback (a namespace sandbox
// has one: its namespace belongs to the host's user namespace, so the
// sandbox cannot add any).
func OpenNetDev(pid int, ifname string) (*NetDev, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/dev")
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	return &NetDev{f: f, ifname: ifname, buf: make([]byte, 4<<10)}, nil
}

// NetCounters is OpenNetDev, one Read and Close.
func NetCounters(pid int, ifname string) (rx, tx uint64, err error) {
	n, err := OpenNetDev(pid, ifname)
	if err != nil {
		return 0, 0, err
	}
	defer n.Close()
	return n.Read()
}

// Read returns the bytes received and sent. An interface that is not
// there is an error.
func (n *NetDev) Read() (rx, tx uint64, err error) {
	rc, err := n.f.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var got int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		got, rerr = syscall.Pread(int(fd), n.buf, 0)
		return true
	}); err != nil {
		return 0, 0, err
	}
	switch {
	case rerr != nil:
		return 0, 0, fmt.Errorf("read %s: %w", n.f.Name(), rerr)
	case got == len(n.buf) && len(n.buf) < 1<<20:
		n.buf = make([]byte, 2*len(n.buf))
		return n.Read()
	}
	return parseNetDev(n.buf[:got], n.ifname)
}

// Close closes the file. A second Close does nothing.
func (n *NetDev) Close() {
	if n.f != nil {
		n.f.Close()
		n.f = nil
	}
}

// parseNetDev finds ifname's received and sent bytes in /proc/net/dev's
// content (two header lines, then "name: rx_bytes packets errs drop fifo
// frame compressed multicast tx_bytes ..."); "" sums all but lo.
func parseNetDev(b []byte, ifname string) (rx, tx uint64, err error) {
	found := false
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		name, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if ifname == "" && string(name) == "lo" || ifname != "" && string(name) != ifname {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) < 9 {
			return 0, 0, fmt.Errorf("net/dev line %q: too few fields", line)
		}
		r, rerr := strconv.ParseUint(string(f[0]), 10, 64)
		t, terr := strconv.ParseUint(string(f[8]), 10, 64)
		if rerr != nil || terr != nil {
			return 0, 0, fmt.Errorf("net/dev line %q: not counters", line)
		}
		rx, tx, found = rx+r, tx+t, true
	}
	if !found && ifname != "" {
		return 0, 0, fmt.Errorf("net/dev: no interface %s", ifname)
	}
	return rx, tx, nil
}
