package guest

import (
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestCmdlineRoundTrip(t *testing.T) {
	in := Config{
		Address:  netip.MustParsePrefix("10.0.2.2/30"),
		Gateway:  netip.MustParseAddr("10.0.2.1"),
		DNS:      []netip.Addr{netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("9.9.9.9")},
		Hostname: "sb1",
		Clock:    time.Unix(1700000000, 0),
		Env:      map[string]string{"A": "b c", "X": "=y"},
		Root:     "/dev/vda",
		Volumes:  []Volume{{Serial: "roostvol0", Path: "/mnt/my data"}, {Serial: "roostvol1", Path: "/ro", ReadOnly: true}},
		Modules:  map[string][]string{},
	}
	out, err := ParseCmdline("console=ttyS0 quiet " + in.String() + " panic=-1")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

func TestParseCmdline(t *testing.T) {
	for _, tc := range []struct {
		line    string
		wantErr bool
		check   func(Config) bool
	}{
		{"", false, func(c Config) bool { return c.Root == "/dev/vda" && !c.Address.IsValid() }},
		{"roost.ip=10.0.2.2/30", false, func(c Config) bool { return c.Address.Bits() == 30 && !c.Gateway.IsValid() }},
		{"roost.ip=nonsense", true, nil},
		{"roost.dns=1.1.1.1,bad", true, nil},
		{"roost.clock=abc", true, nil},
		{"roost.env=!!!", true, nil},
		{"roost.volumes=e30", true, nil}, // {} is no list
		{"roost.volumes=W3sic2VyaWFsIjoidiIsInBhdGgiOiIvZCJ9XQ", false, func(c Config) bool {
			return reflect.DeepEqual(c.Volumes, []Volume{{Serial: "v", Path: "/d"}})
		}},
		{"virtio-mmio.device=4K@0xd0000000:5 virtio_mmio.x=1", false, func(c Config) bool {
			return reflect.DeepEqual(c.Modules["virtio_mmio"], []string{"device=4K@0xd0000000:5", "x=1"})
		}},
		{"init=/x ro rootwait", false, func(c Config) bool { return len(c.Modules) == 0 }},
	} {
		c, err := ParseCmdline(tc.line)
		if (err != nil) != tc.wantErr {
			t.Errorf("%q: err %v", tc.line, err)
			continue
		}
		if err == nil && !tc.check(c) {
			t.Errorf("%q: parsed %+v", tc.line, c)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add("roost.ip=10.0.2.2/30,10.0.2.1 roost.env=e30 a.b=c")
	f.Fuzz(func(t *testing.T, s string) { _, _ = ParseCmdline(s) })
}
