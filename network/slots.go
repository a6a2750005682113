package network

import (
	"fmt"
	"math/bits"
	"net/netip"

	"roost.dev/roost/errdefs"
)

// DefaultSubnet is the sandbox address space when Config.Subnet is unset.
var DefaultSubnet = netip.MustParsePrefix("10.201.0.0/16")

// Subnet bounds: a /29 still holds one usable /30 slot; wider than /8 is
// not an address plan anyone needs and would make the bitmap large.
const (
	minSubnetBits = 8
	maxSubnetBits = 29
)

// addrPlan maps slots to addresses: slot s owns the s-th /30 of the subnet,
// the host side takes its .1 and the sandbox its .2. Slot 0 is never
// handed out so that the subnet's own first address is never a gateway.
type addrPlan struct {
	base     uint32 // first address of the subnet
	capacity int    // usable slots: 1..capacity
}

func newAddrPlan(subnet netip.Prefix) (addrPlan, error) {
	if !subnet.IsValid() {
		subnet = DefaultSubnet
	}
	if !subnet.Addr().Is4() {
		return addrPlan{}, fmt.Errorf("subnet %s: only IPv4 is supported: %w", subnet, errdefs.ErrInvalid)
	}
	if subnet.Bits() < minSubnetBits || subnet.Bits() > maxSubnetBits {
		return addrPlan{}, fmt.Errorf("subnet %s: prefix length must be between %d and %d: %w",
			subnet, minSubnetBits, maxSubnetBits, errdefs.ErrInvalid)
	}
	subnet = subnet.Masked()
	a := subnet.Addr().As4()
	return addrPlan{
		base:     uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]),
		capacity: 1<<(32-subnet.Bits())/4 - 1,
	}, nil
}

func (p addrPlan) valid(slot int) bool { return slot >= 1 && slot <= p.capacity }

func (p addrPlan) addr(slot, offset int) netip.Addr {
	v := p.base + uint32(slot)*4 + uint32(offset)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// host is the host side of slot's /30: the sandbox's gateway.
func (p addrPlan) host(slot int) netip.Prefix {
	return netip.PrefixFrom(p.addr(slot, 1), 30)
}

// sandbox is the sandbox side of slot's /30.
func (p addrPlan) sandbox(slot int) netip.Prefix {
	return netip.PrefixFrom(p.addr(slot, 2), 30)
}

// slotOf is the slot whose sandbox address is a, if any.
func (p addrPlan) slotOf(a netip.Addr) (int, bool) {
	if !a.Is4() {
		return 0, false
	}
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	if v < p.base || v&3 != 2 {
		return 0, false
	}
	slot := int((v - p.base) / 4)
	return slot, p.valid(slot)
}

// slots is a bitmap allocator of slot numbers. It is not safe for
// concurrent use; Manager guards it.
type slots struct {
	used     []uint64 // bit s set: slot s is taken; bit 0 and bits past capacity are always set
	capacity int
}

func newSlots(capacity int) *slots {
	s := &slots{used: make([]uint64, (capacity+1+63)/64), capacity: capacity}
	s.used[0] |= 1 // slot 0 is never handed out
	for i := capacity + 1; i < len(s.used)*64; i++ {
		s.used[i/64] |= 1 << (i % 64)
	}
	return s
}

// acquire takes the lowest free slot.
func (s *slots) acquire() (int, error) {
	for w, word := range s.used {
		if word == ^uint64(0) {
			continue
		}
		b := bits.TrailingZeros64(^word)
		s.used[w] |= 1 << b
		return w*64 + b, nil
	}
	return 0, fmt.Errorf("all %d network slots are in use: %w", s.capacity, errdefs.ErrUnavailable)
}

func (s *slots) reserve(slot int) error {
	if slot < 1 || slot > s.capacity {
		return fmt.Errorf("network slot %d: out of range 1..%d: %w", slot, s.capacity, errdefs.ErrInvalid)
	}
	if s.taken(slot) {
		return fmt.Errorf("network slot %d: already in use: %w", slot, errdefs.ErrConflict)
	}
	s.used[slot/64] |= 1 << (slot % 64)
	return nil
}

func (s *slots) release(slot int) {
	if slot < 1 || slot > s.capacity {
		return
	}
	s.used[slot/64] &^= 1 << (slot % 64)
}

func (s *slots) taken(slot int) bool {
	return s.used[slot/64]&(1<<(slot%64)) != 0
}
