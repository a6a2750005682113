package network

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
)

// resolvConfs are where the host's resolvers are read from, in order: the
// first that names a resolver a sandbox can use wins. systemd-resolved's
// stub (127.0.0.53) means nothing inside a sandbox's namespace, and the
// host's loopback is closed to sandboxes anyway; its upstream servers are
// in the second file, as Docker also reads them.
var resolvConfs = []string{"/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"}

// hostResolvers lists the IPv4 nameservers of the host's resolver
// configuration that a sandbox can use: not loopback, not unspecified, not
// IPv6 (sandboxes have none). Nil when there is none.
func hostResolvers() []netip.Addr {
	for _, path := range resolvConfs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if addrs := parseNameservers(string(b)); len(addrs) > 0 {
			return addrs
		}
	}
	return nil
}

// parseNameservers returns the usable nameserver addresses of a
// resolv.conf, in order, without duplicates.
func parseNameservers(conf string) []netip.Addr {
	var out []netip.Addr
	for line := range strings.Lines(conf) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || !a.Is4() || a.IsLoopback() || a.IsUnspecified() || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// resolverList is the resolvers sandboxes are given. Configured ones are
// fixed; the host's are read again when one of its resolver files
// changes (a DHCP lease, a VPN coming up), and the new ones are added to
// the firewall's set. None is ever removed while the Manager lives:
// sandboxes made before the change keep the old ones in their
// resolv.conf.
type resolverList struct {
	fixed bool

	mu    sync.Mutex   // guards the rest
	stamp string       // the resolver files' sizes and times when last read
	addrs []netip.Addr // what sandboxes are told
	known []netip.Addr // what the firewall lets through: every addrs so far
}

func newResolverList(configured, initial []netip.Addr) *resolverList {
	l := &resolverList{fixed: configured != nil, addrs: initial, known: slices.Clone(initial)}
	if !l.fixed {
		l.stamp = resolvConfStamp()
	}
	return l
}

// current returns the resolvers, first reading the host's again if their
// files changed; add puts new ones in the firewall. A failure keeps the
// old list. The check costs a stat per file.
func (l *resolverList) current(add func([]netip.Addr) error) ([]netip.Addr, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fixed {
		return l.addrs, nil
	}
	stamp := resolvConfStamp()
	if stamp == l.stamp {
		return l.addrs, nil
	}
	now := hostResolvers()
	var fresh []netip.Addr
	for _, a := range now {
		if !slices.Contains(l.known, a) {
			fresh = append(fresh, a)
		}
	}
	if err := add(fresh); err != nil {
		return l.addrs, err
	}
	l.stamp, l.addrs, l.known = stamp, now, append(l.known, fresh...)
	return l.addrs, nil
}

func resolvConfStamp() string {
	var b strings.Builder
	for _, p := range resolvConfs {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s:%d:%d;", p, st.Size(), st.ModTime().UnixNano())
		}
	}
	return b.String()
}
