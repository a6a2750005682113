package network

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// sandboxIf is the sandbox's interface inside its namespace.
const sandboxIf = "eth0"

// Config configures a Manager.
type Config struct {
	// Subnet is the sandbox address space, IPv4, /8 to /29; default
	// 10.201.0.0/16. Slot s owns the s-th /30: the host side is its .1
	// (the sandbox's gateway), the sandbox its .2. Slot 0 is unused, so
	// a /16 has 16383 slots.
	Subnet netip.Prefix
	// AllowCIDRs are destinations in BlockedRanges that sandboxes may
	// reach all the same (a LAN service, a corporate proxy), checked
	// before the blocked ranges: `--allow-sandbox-cidr`, as E2B's
	// ALLOW_SANDBOX_INTERNAL_CIDRS. IPv4 only. They never open the
	// host's own addresses or another sandbox. Default none.
	AllowCIDRs []netip.Prefix
	// Resolvers are the DNS servers sandboxes are told about (Network.DNS)
	// and may reach on port 53, UDP and TCP, wherever they are (a private
	// resolver, one on a host address). Default: the host's IPv4
	// nameservers that are not loopback, from /etc/resolv.conf or else
	// systemd-resolved's upstream list, followed as they change.
	Resolvers []netip.Addr
	// MaxConns bounds the connections each sandbox has open at once
	// through the host (its conntrack entries); a new one beyond it is
	// dropped. Default 4096; negative means no limit.
	MaxConns int
	// NewConnRate bounds the new connections a sandbox opens a second
	// (a burst of twice as many passes); beyond it they are dropped.
	// Default 1000; negative means no limit.
	NewConnRate int
	// Egress shapes what each sandbox sends, on its interface inside its
	// namespace (which sandbox root cannot change: the namespace belongs
	// to the host's user namespace). Zero means the default, 200 MB/s
	// sustained after a one-time 100 MB burst, as the VM runtimes'.
	Egress RateLimit
	// NoEgressLimit turns the egress limit off: for VM runtimes, which
	// shape their guests' traffic themselves.
	NoEgressLimit bool
}

// RateLimit is a token bucket: Rate bytes a second sustained, after a
// one-time Burst of bytes.
type RateLimit struct {
	Rate  uint64
	Burst uint32
}

// Defaults of Config.
const (
	DefaultMaxConns    = 4096
	DefaultNewConnRate = 1000
)

// DefaultEgress is Config.Egress's default.
var DefaultEgress = RateLimit{Rate: 200_000_000, Burst: 100_000_000}

// Manager plumbs sandboxes' networks on this host. Its methods are safe for
// concurrent use; calls for different slots run in parallel, calls for one
// slot are the caller's to serialise. Its only state is which slots are
// taken and a cache of their internet switches: the namespaces, links and
// firewall elements it makes are found again by name after a restart.
type Manager struct {
	log  *slog.Logger
	plan addrPlan
	// nl talks to the host namespace. Its zero value opens a socket per
	// request, in the calling thread's namespace (always the host's: no
	// goroutine of this package runs on a thread left in another), so
	// there is nothing to close.
	nl *netlink.Handle

	egress RateLimit // zero: none
	dns    *resolverList

	conns *connForgetter // batches the conntrack walks of teardowns

	mu       sync.Mutex // guards slots and internet
	slots    *slots
	internet map[int]bool // slot → internet on, for slots whose state this Manager set
}

// New prepares the host: it enables IPv4 forwarding, makes /run/netns a
// shared mount, and installs (replacing any old copy) the nftables table
// `inet roost`. It needs root. A setting it cannot honour (an IPv6
// allowed CIDR or resolver) is refused with errdefs.ErrInvalid.
func New(cfg Config, log *slog.Logger) (*Manager, error) {
	plan, err := newAddrPlan(cfg.Subnet)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := cfg.policy()
	if err != nil {
		return nil, err
	}
	if err := enableForwarding(log); err != nil {
		return nil, err
	}
	if err := ensureNetnsDir(); err != nil {
		return nil, err
	}
	kept, err := installTable(p)
	if err != nil {
		return nil, err
	}
	egress := cmp.Or(cfg.Egress, DefaultEgress)
	if cfg.NoEgressLimit {
		egress = RateLimit{}
	}
	log.Info("network ready", "subnet", p.subnet, "slots", plan.capacity, "no_internet_kept", kept,
		"allowed", cfg.AllowCIDRs, "resolvers", p.resolvers, "max_conns", p.maxConns, "new_conn_rate", p.connRate,
		"egress_bytes_per_second", egress.Rate)
	return &Manager{
		log: log, plan: plan, nl: &netlink.Handle{}, egress: egress, dns: newResolverList(cfg.Resolvers, p.resolvers),
		slots: newSlots(plan.capacity), internet: map[int]bool{}, conns: newConnForgetter(),
	}, nil
}

// policy checks cfg and applies its defaults.
func (cfg Config) policy() (policy, error) {
	p := policy{subnet: cmp.Or(cfg.Subnet, DefaultSubnet).Masked(), resolvers: cfg.Resolvers}
	for _, c := range cfg.AllowCIDRs {
		if _, err := parseCIDR(c.String()); err != nil {
			return policy{}, err
		}
	}
	p.allowed = mergeRanges(cfg.AllowCIDRs)
	for _, a := range cfg.Resolvers {
		if !a.Is4() {
			return policy{}, fmt.Errorf("sandbox resolver %s: only IPv4 (sandboxes have no IPv6): %w", a, errdefs.ErrInvalid)
		}
	}
	if cfg.Resolvers == nil {
		p.resolvers = hostResolvers()
	}
	p.maxConns = limitOr(cfg.MaxConns, DefaultMaxConns)
	p.connRate = limitOr(cfg.NewConnRate, DefaultNewConnRate)
	return p, nil
}

// limitOr is v, def when v is zero, and 0 (no limit) when v is negative.
func limitOr(v, def int) int {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

func enableForwarding(log *slog.Logger) error {
	const path = "/proc/sys/net/ipv4/ip_forward"
	cur, err := os.ReadFile(path)
	if err == nil && len(cur) > 0 && cur[0] == '1' {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0); err != nil {
		return fmt.Errorf("enable ip forwarding: %w", err)
	}
	log.Info("ip forwarding enabled", "sysctl", "net.ipv4.ip_forward")
	return nil
}

// Capacity is the number of slots.
func (m *Manager) Capacity() int { return m.plan.capacity }

// Acquire takes the lowest free slot; errdefs.ErrUnavailable when all are
// taken. A slot whose host link exists although this Manager has not handed
// it out (another Manager on the host: a second agent, a test) is marked
// taken and skipped, so Setup does not fail on it.
func (m *Manager) Acquire() (int, error) {
	for {
		m.mu.Lock()
		slot, err := m.slots.acquire()
		m.mu.Unlock()
		if err != nil {
			return 0, err
		}
		link, err := m.findLink(hostLink(slot))
		if err == nil && link == nil {
			return slot, nil
		}
		m.log.Warn("network slot skipped: its host link already exists", "slot", slot, "link", hostLink(slot), "err", err)
	}
}

// Reserve marks slot as taken, for sandboxes re-adopted after a restart;
// errdefs.ErrConflict if it already is, errdefs.ErrInvalid if out of range.
func (m *Manager) Reserve(slot int) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.slots.reserve(slot)
}

// Release frees slot. Releasing a free or out-of-range slot does nothing.
func (m *Manager) Release(slot int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.slots.release(slot)
}

func (m *Manager) checkSlot(slot int) error {
	if !m.plan.valid(slot) {
		return fmt.Errorf("network slot %d: out of range 1..%d: %w", slot, m.plan.capacity, errdefs.ErrInvalid)
	}
	return nil
}

// Setup gives sandbox id the network of slot: a namespace at NetnsPath(id)
// with lo and eth0 up, eth0 addressed and routed through the host side of
// a veth pair named roost-<slot>. With internet false the sandbox's address
// is in no_internet before its link exists. It takes a few milliseconds; on
// failure it undoes what it made. The slot must have been acquired or
// reserved; Setup does not check.
func (m *Manager) Setup(ctx context.Context, id string, slot int, internet bool) (_ runtime.Network, err error) {
	if err := validID(id); err != nil {
		return runtime.Network{}, err
	}
	if err := m.checkSlot(slot); err != nil {
		return runtime.Network{}, err
	}
	var (
		nsPath = NetnsPath(id)
		link   = hostLink(slot)
		host   = m.plan.host(slot)
		addr   = m.plan.sandbox(slot)
		undo   []func() error
	)
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				m.log.Warn("network setup rollback step failed", "sandbox", id, "slot", slot, "err", uerr)
			}
		}
	}()

	dns, err := m.dns.current(addResolvers)
	if err != nil {
		m.log.Warn("sandbox resolvers not refreshed", "sandbox", id, "err", err)
	}
	if !internet {
		if err := setElements(true, addr.Addr()); err != nil {
			return runtime.Network{}, err
		}
		undo = append(undo, func() error { return setElements(false, addr.Addr()) })
	}
	if err := ctx.Err(); err != nil {
		return runtime.Network{}, fmt.Errorf("network setup: %w", err)
	}

	ns, err := createNetns(nsPath)
	if err != nil {
		return runtime.Network{}, err
	}
	defer ns.close()
	undo = append(undo, func() error { return removeNetns(nsPath) })
	if err := ctx.Err(); err != nil {
		return runtime.Network{}, fmt.Errorf("network setup: %w", err)
	}

	// The peer is created inside the namespace under its final name, so a
	// host-side name collision is impossible and there is no move step.
	// The host side comes up once its sysctls are set (hostLinkSysctls).
	attrs := netlink.NewLinkAttrs()
	attrs.Name = link
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: sandboxIf, PeerNamespace: netlink.NsFd(ns.fd)}
	if err := m.nl.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return runtime.Network{}, fmt.Errorf("create veth %s: %w", link, errdefs.ErrConflict)
		}
		return runtime.Network{}, fmt.Errorf("create veth %s: %w", link, err)
	}
	undo = append(undo, func() error { return m.deleteLink(link) })
	if err := m.nl.AddrAdd(veth, &netlink.Addr{IPNet: ipNet(host)}); err != nil {
		return runtime.Network{}, fmt.Errorf("address %s on %s: %w", host, link, err)
	}
	if err := hostLinkSysctls(veth); err != nil { // AddrAdd found its index
		return runtime.Network{}, err
	}
	if err := m.nl.LinkSetUp(veth); err != nil {
		return runtime.Network{}, fmt.Errorf("bring %s up: %w", link, err)
	}

	peer, err := ns.nl.LinkByName(sandboxIf)
	if err != nil {
		return runtime.Network{}, fmt.Errorf("find %s in sandbox namespace: %w", sandboxIf, err)
	}
	if err := ns.nl.AddrAdd(peer, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		return runtime.Network{}, fmt.Errorf("address %s on sandbox %s: %w", addr, sandboxIf, err)
	}
	if err := ns.nl.LinkSetUp(peer); err != nil {
		return runtime.Network{}, fmt.Errorf("bring sandbox %s up: %w", sandboxIf, err)
	}
	gw := host.Addr()
	if err := ns.nl.RouteAdd(&netlink.Route{LinkIndex: peer.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
		return runtime.Network{}, fmt.Errorf("default route via %s in sandbox: %w", gw, err)
	}
	if err := limitEgress(ns.nl, peer, m.egress); err != nil {
		return runtime.Network{}, err
	}

	m.rememberInternet(slot, internet)
	m.log.Debug("sandbox network set up", "sandbox", id, "slot", slot, "address", addr, "internet", internet)
	return runtime.Network{Netns: nsPath, Interface: sandboxIf, Address: addr, Gateway: gw, DNS: slices.Clone(dns)}, nil
}

// Teardown removes what Setup made for sandbox id on slot; what is already
// gone is skipped, so it is safe to repeat. It does not release the slot.
//
// It takes tens of milliseconds, nearly all of it the kernel waiting for
// RCU grace periods while it unregisters the veth pair and, for a sandbox
// with internet off, commits the set element's removal; the two waits
// overlap. Removing the sandbox's conntrack entries may wait longer, up
// to connWalkInterval, for a walk of the table it shares with other
// teardowns.
func (m *Manager) Teardown(ctx context.Context, id string, slot int) error {
	if err := validID(id); err != nil {
		return err
	}
	if err := m.checkSlot(slot); err != nil {
		return err
	}
	var (
		name             = hostLink(slot)
		addr             = m.plan.sandbox(slot).Addr()
		linkErr, elemErr error
		ctErr            error
		wg               sync.WaitGroup
		link, findErr    = m.findLink(name)
		sequential       = findErr != nil
	)
	if link != nil {
		// Down cuts the sandbox off at once, so its firewall element may
		// go while the link is still being deleted.
		if err := m.nl.LinkSetDown(link); err != nil && !errors.Is(err, unix.ENODEV) {
			linkErr, sequential = fmt.Errorf("set link %s down: %w", name, err), true
		}
	}
	if sequential {
		linkErr = errors.Join(findErr, linkErr, m.deleteLink(name))
	} else if link != nil {
		wg.Go(func() { linkErr = m.delLink(link) })
	}
	if !m.knownOnline(slot) {
		wg.Go(func() { elemErr = setElements(false, addr) })
	}
	// The sandbox's connections leave the host's table now, not when
	// they time out (days, for an established TCP one): they would
	// count against the next sandbox on this slot's MaxConns.
	wg.Go(func() { ctErr = m.conns.forget(addr) })
	nsErr := removeNetns(NetnsPath(id))
	wg.Wait()
	if err := errors.Join(linkErr, nsErr, elemErr, ctErr); err != nil {
		return fmt.Errorf("network teardown of %s: %w", id, err)
	}
	m.forgetInternet(slot)
	m.log.Debug("sandbox network torn down", "sandbox", id, "slot", slot)
	return nil
}

// SetInternet switches slot's access to anything beyond the host on or off.
// Turning it off also cuts the sandbox's established connections. Turning
// it on takes ~10 ms (see Teardown), turning it off well under one.
func (m *Manager) SetInternet(ctx context.Context, slot int, on bool) error {
	if err := m.checkSlot(slot); err != nil {
		return err
	}
	if err := setElements(!on, m.plan.sandbox(slot).Addr()); err != nil {
		return err
	}
	m.rememberInternet(slot, on)
	return nil
}

// The internet state of slots this Manager set up or switched, so that
// Teardown skips the slow removal of a set element that is not there.
// Slots it has not touched (re-adopted after a restart) are unknown and
// get the removal.

func (m *Manager) rememberInternet(slot int, on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.internet[slot] = on
}

func (m *Manager) forgetInternet(slot int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.internet, slot)
}

func (m *Manager) knownOnline(slot int) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	on, known := m.internet[slot]
	return known && on
}

// findLink returns the host link name, or nil if there is none.
func (m *Manager) findLink(name string) (netlink.Link, error) {
	l, err := m.nl.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("find link %s: %w", name, err)
	}
	return l, nil
}

// deleteLink deletes a host link by name; a missing one is not an error.
// Deleting one end of a veth pair deletes both.
func (m *Manager) deleteLink(name string) error {
	l, err := m.findLink(name)
	if l == nil {
		return err
	}
	return m.delLink(l)
}

func (m *Manager) delLink(l netlink.Link) error {
	if err := m.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", l.Attrs().Name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}
