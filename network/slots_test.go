package network

import (
	"errors"
	"net/netip"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestAddrPlan(t *testing.T) {
	tests := []struct {
		subnet   string // "" = default
		capacity int
		slot     int
		host     string
		sandbox  string
	}{
		{"", 16383, 1, "10.201.0.5/30", "10.201.0.6/30"},
		{"", 16383, 63, "10.201.0.253/30", "10.201.0.254/30"},
		{"", 16383, 64, "10.201.1.1/30", "10.201.1.2/30"},
		{"", 16383, 16383, "10.201.255.253/30", "10.201.255.254/30"},
		{"10.201.7.9/16", 16383, 2, "10.201.0.9/30", "10.201.0.10/30"}, // host bits ignored
		{"192.168.10.0/24", 63, 63, "192.168.10.253/30", "192.168.10.254/30"},
		{"172.16.0.0/29", 1, 1, "172.16.0.5/30", "172.16.0.6/30"},
		{"10.0.0.0/8", 1<<22 - 1, 1<<22 - 1, "10.255.255.253/30", "10.255.255.254/30"},
	}
	for _, tt := range tests {
		var subnet netip.Prefix
		if tt.subnet != "" {
			subnet = netip.MustParsePrefix(tt.subnet)
		}
		p, err := newAddrPlan(subnet)
		if err != nil {
			t.Fatalf("newAddrPlan(%q): %v", tt.subnet, err)
		}
		if p.capacity != tt.capacity {
			t.Errorf("%q: capacity %d, want %d", tt.subnet, p.capacity, tt.capacity)
		}
		if got := p.host(tt.slot).String(); got != tt.host {
			t.Errorf("%q slot %d: host %s, want %s", tt.subnet, tt.slot, got, tt.host)
		}
		if got := p.sandbox(tt.slot).String(); got != tt.sandbox {
			t.Errorf("%q slot %d: sandbox %s, want %s", tt.subnet, tt.slot, got, tt.sandbox)
		}
		if s, ok := p.slotOf(p.sandbox(tt.slot).Addr()); !ok || s != tt.slot {
			t.Errorf("%q: slotOf(%s) = %d, %v; want %d", tt.subnet, p.sandbox(tt.slot).Addr(), s, ok, tt.slot)
		}
		if _, ok := p.slotOf(p.host(tt.slot).Addr()); ok {
			t.Errorf("%q: slotOf(host address %s) matched a slot", tt.subnet, p.host(tt.slot).Addr())
		}
	}
}

func TestAddrPlanInvalid(t *testing.T) {
	for _, s := range []string{"fd00::/64", "10.0.0.0/30", "10.0.0.0/32", "10.0.0.0/7"} {
		if _, err := newAddrPlan(netip.MustParsePrefix(s)); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("newAddrPlan(%s) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestSlotOfOutside(t *testing.T) {
	p, _ := newAddrPlan(netip.Prefix{})
	for _, a := range []string{"10.201.0.2", "10.202.0.6", "10.200.255.254", "192.0.2.2", "::1"} {
		if s, ok := p.slotOf(netip.MustParseAddr(a)); ok {
			t.Errorf("slotOf(%s) = %d, want no slot", a, s)
		}
	}
}

func TestSlots(t *testing.T) {
	// Each step runs against the state the previous steps left.
	type step struct {
		op   string // acquire, reserve, release
		slot int    // for reserve and release; for acquire, the slot expected
		err  error
	}
	tests := []struct {
		name     string
		capacity int
		steps    []step
	}{
		{"lowest first", 5, []step{
			{"acquire", 1, nil}, {"acquire", 2, nil}, {"acquire", 3, nil},
			{"release", 2, nil}, {"acquire", 2, nil}, {"acquire", 4, nil},
		}},
		{"exhaustion", 3, []step{
			{"acquire", 1, nil}, {"acquire", 2, nil}, {"acquire", 3, nil},
			{"acquire", 0, errdefs.ErrUnavailable}, {"acquire", 0, errdefs.ErrUnavailable},
			{"release", 2, nil}, {"acquire", 2, nil}, {"acquire", 0, errdefs.ErrUnavailable},
		}},
		{"reserve conflicts", 4, []step{
			{"reserve", 2, nil}, {"reserve", 2, errdefs.ErrConflict},
			{"acquire", 1, nil}, {"acquire", 3, nil}, {"reserve", 3, errdefs.ErrConflict},
			{"release", 3, nil}, {"reserve", 3, nil}, {"acquire", 4, nil},
		}},
		{"reserve out of range", 4, []step{
			{"reserve", 0, errdefs.ErrInvalid}, {"reserve", 5, errdefs.ErrInvalid},
			{"reserve", -1, errdefs.ErrInvalid}, {"acquire", 1, nil},
		}},
		{"release is forgiving", 2, []step{
			{"release", 0, nil}, {"release", 1, nil}, {"release", 99, nil},
			{"acquire", 1, nil}, {"acquire", 2, nil}, {"acquire", 0, errdefs.ErrUnavailable},
		}},
		{"word boundaries", 130, func() []step {
			var s []step
			for i := 1; i <= 130; i++ {
				s = append(s, step{"acquire", i, nil})
			}
			return append(s, step{"acquire", 0, errdefs.ErrUnavailable},
				step{"release", 64, nil}, step{"release", 127, nil},
				step{"acquire", 64, nil}, step{"acquire", 127, nil})
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSlots(tt.capacity)
			for i, st := range tt.steps {
				switch st.op {
				case "acquire":
					got, err := s.acquire()
					if !errors.Is(err, st.err) || (st.err == nil && got != st.slot) {
						t.Fatalf("step %d: acquire = %d, %v; want %d, %v", i, got, err, st.slot, st.err)
					}
				case "reserve":
					if err := s.reserve(st.slot); !errors.Is(err, st.err) {
						t.Fatalf("step %d: reserve(%d) = %v, want %v", i, st.slot, err, st.err)
					}
				case "release":
					s.release(st.slot)
				}
			}
		})
	}
}

func TestFullDefaultSubnet(t *testing.T) {
	p, _ := newAddrPlan(netip.Prefix{})
	s := newSlots(p.capacity)
	for want := 1; want <= p.capacity; want++ {
		got, err := s.acquire()
		if err != nil || got != want {
			t.Fatalf("acquire = %d, %v; want %d", got, err, want)
		}
	}
	if _, err := s.acquire(); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("acquire on a full allocator: %v, want ErrUnavailable", err)
	}
}

func TestValidID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"i2sb4j7kzx1u5bg9ewp6x", true},
		{"a", true},
		{"sbx-1_2.3", true},
		{"", false},
		{".", false},
		{"..", false},
		{"-x", false},
		{"a/b", false},
		{"a b", false},
		{"a\x00", false},
		{string(make([]byte, maxIDLen+1)), false},
	}
	for _, tt := range tests {
		err := validID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("validID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
		if err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("validID(%q) = %v, want ErrInvalid", tt.id, err)
		}
	}
}
