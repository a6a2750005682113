package proc

import (
	"os"
	"testing"
)

func TestParseNetDev(t *testing.T) {
	const dev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5222961    4242    0    0    0     0          0         0   381234    3030    0    0    0     0       0          0
  tap0:     100       1    0    0    0     0          0         0      200       2    0    0    0     0       0          0
`
	for _, tt := range []struct {
		ifname string
		rx, tx uint64
		err    bool
	}{
		{"eth0", 5222961, 381234, false},
		{"tap0", 100, 200, false},
		{"lo", 1000, 1000, false},
		{"", 5223061, 381434, false}, // all but lo
		{"eth1", 0, 0, true},
		{"eth", 0, 0, true},
	} {
		rx, tx, err := parseNetDev([]byte(dev), tt.ifname)
		if rx != tt.rx || tx != tt.tx || (err != nil) != tt.err {
			t.Errorf("%q: %d, %d, %v; want %d, %d, error %v", tt.ifname, rx, tx, err, tt.rx, tt.tx, tt.err)
		}
	}
	for _, bad := range []string{"eth0: 1 2 3\n", "eth0: x 0 0 0 0 0 0 0 1\n"} {
		if _, _, err := parseNetDev([]byte(bad), "eth0"); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestNetDev(t *testing.T) {
	n, err := OpenNetDev(os.Getpid(), "lo")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for range 2 { // the file reads again from its start
		if _, _, err := n.Read(); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := NetCounters(os.Getpid(), "nosuch0"); err == nil {
		t.Error("counters of an interface that is not there")
	}
	n.Close()
}
