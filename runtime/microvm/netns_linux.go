package microvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"roost.dev/roost/runtime/proc"
)

// The guest's network is the same in every sandbox, so that a memory
// snapshot (which holds the guest's addresses, routes and ARP cache)
// restores on any slot: a /30 between the TAP device (the gateway) and
// the guest, with fixed MAC addresses on both ends. The VMM opens the TAP
// device by name inside the sandbox's namespace.
var (
	GuestAddr  = netip.MustParsePrefix("10.0.2.2/30")
	GuestGW    = netip.MustParseAddr("10.0.2.1")
	hostTapMAC = net.HardwareAddr{0x02, 0x52, 0x4f, 0x00, 0x00, 0x01}
	GuestMAC   = "02:52:4f:00:00:02"
	TapName    = "tap0"
	tapTxQueue = 5000
	nftTable   = "roost_vm"
)

// SetupGuestNet makes the TAP device the VMM attaches to, inside the
// sandbox's namespace, and the rules that give the guest the slot's
// address: DNAT of everything that arrives for the slot address on the
// namespace's own interface, masquerade of the guest's traffic leaving
// through it. The host firewall (package network) sees only the slot
// address, so its isolation rules hold for VM sandboxes unchanged.
// Idempotent, for Recover and Restore.
func SetupGuestNet(netnsPath, ifname string, slot netip.Addr, egress RateLimit) error {
	return proc.InNetns(netnsPath, func() error {
		if err := limitEgress(ifname, egress); err != nil {
			return err
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
			return fmt.Errorf("enable forwarding in sandbox namespace: %w", err)
		}
		if _, err := netlink.LinkByName(TapName); err != nil {
			tap := &netlink.Tuntap{
				LinkAttrs: netlink.LinkAttrs{Name: TapName, TxQLen: tapTxQueue, HardwareAddr: hostTapMAC},
				Mode:      netlink.TUNTAP_MODE_TAP,
				Flags:     netlink.TUNTAP_DEFAULTS | netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			}
			if err := netlink.LinkAdd(tap); err != nil {
				return fmt.Errorf("create %s: %w", TapName, err)
			}
		}
		link, err := netlink.LinkByName(TapName)
		if err != nil {
			return fmt.Errorf("find %s: %w", TapName, err)
		}
		if err := netlink.LinkSetHardwareAddr(link, hostTapMAC); err != nil {
			return fmt.Errorf("set %s address: %w", TapName, err)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: GuestGW.AsSlice(), Mask: net.CIDRMask(GuestAddr.Bits(), 32)}}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("address %s: %w", TapName, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring up %s: %w", TapName, err)
		}
		return installNAT(ifname, slot)
	})
}

// RateLimit is a token bucket: Rate bytes a second sustained, after a
// one-time Burst of bytes. A zero Rate means no limit.
type RateLimit struct {
	Rate  uint64
	Burst uint32
}

// limitEgress shapes what leaves the namespace through ifname, which is
// all the guest sends, with a tbf qdisc: for a VMM without a rate limiter
// of its own (QEMU's TAP backend has none; Firecracker's tx_rate_limiter
// is the model, and the firecracker driver uses that instead).
func limitEgress(ifname string, l RateLimit) error {
	if l.Rate == 0 {
		return nil
	}
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: link.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       l.Rate,
		Buffer:     netlink.Xmittime(l.Rate, l.Burst),
		// Queue up to 50 ms at the sustained rate before dropping.
		Limit: uint32(min(l.Rate/20, 1<<30)),
	}
	if err := netlink.QdiscReplace(q); err != nil {
		return fmt.Errorf("egress limit on %s: %w", ifname, err)
	}
	return nil
}

// installNAT replaces the namespace's `ip roost_vm` table. It runs on a
// thread inside the namespace, so the default netlink socket is the
// namespace's.
//
//	prerouting (dnat):  iif IFNAME, daddr SLOT → dnat to GUEST
//	postrouting (nat):  saddr GUEST, oif IFNAME → snat to SLOT
//	input (filter):     iif tap0, not established/related → drop
//	                    (the guest reaches nothing in the namespace itself)
func installNAT(ifname string, slot netip.Addr) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	table := &nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4}
	c.AddTable(table)
	c.DelTable(table)
	c.AddTable(table)
	accept := nftables.ChainPolicyAccept
	chain := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: table, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept})
	}
	slot4, guest4 := slot.As4(), GuestAddr.Addr().As4()
	ifn := func(key expr.MetaKey, name string) []expr.Any {
		b := make([]byte, unix.IFNAMSIZ)
		copy(b, name)
		return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b}}
	}
	field := func(off uint32, want []byte) []expr.Any {
		return []expr.Any{
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: want},
		}
	}
	nat := func(typ expr.NATType, to []byte) []expr.Any {
		return []expr.Any{
			&expr.Immediate{Register: 1, Data: to},
			&expr.NAT{Type: typ, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		}
	}
	join := func(parts ...[]expr.Any) []expr.Any {
		var all []expr.Any
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	pre := chain("prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	c.AddRule(&nftables.Rule{Table: table, Chain: pre, Exprs: join(ifn(expr.MetaKeyIIFNAME, ifname), field(16, slot4[:]), nat(expr.NATTypeDestNAT, guest4[:]))})
	post := chain("postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	c.AddRule(&nftables.Rule{Table: table, Chain: post, Exprs: join(field(12, guest4[:]), ifn(expr.MetaKeyOIFNAME, ifname), nat(expr.NATTypeSourceNAT, slot4[:]))})
	in := chain("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	c.AddRule(&nftables.Rule{Table: table, Chain: in, Exprs: join(ifn(expr.MetaKeyIIFNAME, TapName), []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
		&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop},
	})})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install nftables table ip %s in sandbox namespace: %w", nftTable, err)
	}
	return nil
}

// TeardownGuestNet undoes SetupGuestNet once the VMM is gone, so that the
// slot address stops leading anywhere: the NAT table, the TAP device and
// the namespace's connection tracking go, and clients with connections
// open to the guest get a reset from the namespace instead of silence.
// A namespace that no longer exists is not an error.
func TeardownGuestNet(netnsPath string) error {
	if _, err := os.Stat(netnsPath); err != nil {
		return nil
	}
	return proc.InNetns(netnsPath, func() error {
		var errs []error
		c, err := nftables.New()
		if err == nil {
			c.DelTable(&nftables.Table{Name: nftTable, Family: nftables.TableFamilyIPv4})
			if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("remove nftables table %s: %w", nftTable, err))
			}
		}
		if link, err := netlink.LinkByName(TapName); err == nil {
			if err := netlink.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", TapName, err))
			}
		}
		if err := netlink.ConntrackTableFlush(netlink.ConntrackTable); err != nil {
			errs = append(errs, fmt.Errorf("flush conntrack: %w", err))
		}
		return errors.Join(errs...)
	})
}

// DefaultEgress is the egress limit of a VM sandbox unless configured:
// 200 MB/s sustained after a one-time burst of 100 MB.
var DefaultEgress = RateLimit{Rate: 200_000_000, Burst: 100_000_000}

// OpenTap opens the sandbox's TAP device, which SetupGuestNet made in the
// namespace at netnsPath, for a VMM that is not allowed to open it
// itself: the descriptor is the VMM's to read and write frames on, with
// virtio-net headers (IFF_VNET_HDR), and gives it no power over the
// device or the namespace.
func OpenTap(netnsPath string) (*os.File, error) {
	var tap *os.File
	err := proc.InNetns(netnsPath, func() error {
		// The device is looked up in the namespace of the thread that
		// opens /dev/net/tun.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(TapName)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("attach %s: %w", TapName, err)
		}
		tap = os.NewFile(uintptr(fd), TapName)
		return nil
	})
	return tap, err
}

// ChownTap makes uid the owner of the sandbox's TAP device, so that a
// VMM running as uid may attach to it by name (as Firecracker does), and
// no other unprivileged uid may.
func ChownTap(netnsPath string, uid int) error {
	tap, err := OpenTap(netnsPath)
	if err != nil {
		return err
	}
	defer tap.Close()
	if err := unix.IoctlSetInt(int(tap.Fd()), unix.TUNSETOWNER, uid); err != nil {
		return fmt.Errorf("set owner of %s: %w", TapName, err)
	}
	return nil
}
