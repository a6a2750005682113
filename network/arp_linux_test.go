package network

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestARPFromMadeUpAddressesIgnored sends what sandbox root could if it
// had CAP_NET_RAW over its namespace (it has not: see TestAttackARPSpoofing):
// ARP requests for the gateway from sender addresses that are not the
// sandbox's. The host learns none of them, so they can neither poison nor
// fill its neighbour table; the sandbox's own address is still learnt.
func TestARPFromMadeUpAddressesIgnored(t *testing.T) {
	m := newTestManager(t)
	sb := setupSandbox(t, m, true)
	senders := []netip.Addr{netip.MustParseAddr("192.168.1.1"), m.plan.sandbox(sb.slot + 1).Addr(), sb.net.Gateway.Next().Next().Next()}
	for i := range 100 {
		senders = append(senders, netip.AddrFrom4([4]byte{10, 66, byte(i / 250), byte(1 + i%250)}))
	}
	err := inNetns(sb.net.Netns, func() error {
		eth0, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ARP)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: eth0.Index, Protocol: htons(unix.ETH_P_ARP), Halen: 6}
		copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		for _, s := range append(senders, sb.net.Address.Addr()) {
			if err := unix.Sendto(fd, arpRequest(eth0.HardwareAddr, s, sb.net.Gateway), 0, to); err != nil {
				return fmt.Errorf("send arp: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName(hostLink(sb.slot))
	if err != nil {
		t.Fatal(err)
	}
	neigh, err := netlink.NeighList(link.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	own := false
	for _, n := range neigh {
		ip, _ := netip.AddrFromSlice(n.IP.To4())
		if ip == sb.net.Address.Addr() {
			own = true
			continue
		}
		t.Errorf("the host learnt %s (%s) on the sandbox's link", ip, n.HardwareAddr)
	}
	if !own {
		t.Errorf("the host did not learn the sandbox's own address %s: neighbours %v", sb.net.Address.Addr(), neigh)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// arpRequest is an Ethernet frame: who has target? tell sender (at mac).
func arpRequest(mac net.HardwareAddr, sender, target netip.Addr) []byte {
	f := append([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac...)
	f = binary.BigEndian.AppendUint16(f, unix.ETH_P_ARP)
	f = binary.BigEndian.AppendUint16(f, 1)      // Ethernet
	f = binary.BigEndian.AppendUint16(f, 0x0800) // IPv4
	f = append(f, 6, 4)
	f = binary.BigEndian.AppendUint16(f, 1) // request
	s, tg := sender.As4(), target.As4()
	f = append(append(f, mac...), s[:]...)
	f = append(append(f, make([]byte, 6)...), tg[:]...)
	return f
}
