package guest

import (
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
)

// configureNetwork brings lo up and gives eth0 its address and default
// route from roost.ip.
func configureNetwork() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if !cfg.Address.IsValid() {
		return nil
	}
	var eth netlink.Link
	deadline := time.Now().Add(10 * time.Second)
	for {
		eth, err = netlink.LinkByName("eth0")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no eth0 (no virtio-net driver?): %w", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   cfg.Address.Addr().AsSlice(),
		Mask: net.CIDRMask(cfg.Address.Bits(), 32),
	}}
	if err := netlink.AddrReplace(eth, addr); err != nil {
		return fmt.Errorf("address eth0: %w", err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	if cfg.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: cfg.Gateway.AsSlice()}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
	}
	return nil
}
