package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// Prune removes what a crash left behind: every namespace /run/netns/roost-*
// whose id is not a key of keep, every host veth roost-<slot> whose slot is
// not a value of keep, and every no_internet element that is not the
// address of a kept slot. It logs each removal and goes on past failures,
// returning them joined. A keep entry with a slot outside 1..Capacity keeps
// only its namespace.
//
// Links named roost-* that this package does not make (not a veth, or not
// roost-<decimal>) are left alone.
func (m *Manager) Prune(ctx context.Context, keep map[string]int) error {
	slots := make(map[int]bool, len(keep))
	for _, s := range keep {
		if m.plan.valid(s) {
			slots[s] = true
		}
	}
	// Links first, so no pruned sandbox keeps a path out while the rest goes.
	err := errors.Join(m.pruneLinks(ctx, slots), m.pruneNetns(ctx, keep), m.pruneElements(ctx, slots))
	if err != nil {
		return fmt.Errorf("prune networks: %w", err)
	}
	return nil
}

func (m *Manager) pruneNetns(ctx context.Context, keep map[string]int) error {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("list %s: %w", netnsDir, err)
	}
	var errs []error
	for _, e := range entries {
		id, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		if _, kept := keep[id]; kept {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := removeNetns(NetnsPath(id)); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Info("removed leftover network namespace", "netns", e.Name())
	}
	return errors.Join(errs...)
}

func (m *Manager) pruneLinks(ctx context.Context, slots map[int]bool) error {
	links, err := m.listLinks()
	if err != nil {
		return err
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		slot, ok := slotOfLink(name)
		if !ok || l.Type() != "veth" || slots[slot] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := m.deleteLink(name); err != nil {
			errs = append(errs, err)
			continue
		}
		m.log.Info("removed leftover host link", "link", name)
	}
	return errors.Join(errs...)
}

// listLinks retries a dump the kernel interrupted because links changed
// meanwhile (other sandboxes coming and going).
func (m *Manager) listLinks() ([]netlink.Link, error) {
	var err error
	for range 5 {
		var links []netlink.Link
		if links, err = m.nl.LinkList(); err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list links: %w", err)
}

// slotOfLink parses roost-<slot> as hostLink writes it.
func slotOfLink(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	slot, err := strconv.Atoi(s)
	if err != nil || slot < 0 || hostLink(slot) != name {
		return 0, false
	}
	return slot, true
}

func (m *Manager) pruneElements(ctx context.Context, slots map[int]bool) error {
	addrs, err := listNoInternet()
	if err != nil {
		return err
	}
	var stale []netip.Addr
	for _, a := range addrs {
		if slot, ok := m.plan.slotOf(a); ok && slots[slot] {
			continue
		}
		stale = append(stale, a)
	}
	if len(stale) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := setElements(false, stale...); err != nil {
		return err
	}
	for _, a := range stale {
		m.log.Info("removed leftover firewall element", "set", noInternetSet, "address", a)
	}
	return nil
}
