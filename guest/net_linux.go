package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// configureNetwork brings lo up and gives eth0 its address and default
// route from roost.ip.
func configureNetwork() error {
	rt, err := dialRoute()
	if err != nil {
		return err
	}
	defer rt.close()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := rt.linkUp(lo.Index); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if !cfg.Address.IsValid() {
		return nil
	}
	var eth *net.Interface
	deadline := time.Now().Add(10 * time.Second)
	for {
		eth, err = net.InterfaceByName("eth0")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no eth0 (no virtio-net driver?): %w", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := rt.replaceAddr(eth.Index, cfg.Address); err != nil {
		return fmt.Errorf("address eth0: %w", err)
	}
	if err := rt.linkUp(eth.Index); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	if cfg.Gateway.IsValid() {
		if err := rt.replaceDefaultRoute(eth.Index, cfg.Gateway); err != nil {
			return fmt.Errorf("default route: %w", err)
		}
	}
	return nil
}

// routeSocket is a NETLINK_ROUTE socket making one request at a time: the
// three changes the guest needs, written with package syscall so that the
// init links nothing beyond the standard library.
type routeSocket struct {
	fd  int
	seq uint32
}

func dialRoute() (*routeSocket, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	return &routeSocket{fd: fd}, nil
}

func (s *routeSocket) close() { syscall.Close(s.fd) }

// linkUp sets IFF_UP on the link with index ifindex (ip link set up).
func (s *routeSocket) linkUp(ifindex int) error {
	// struct ifinfomsg: family, pad, type, index, flags, change.
	var b []byte
	b = append(b, syscall.AF_UNSPEC, 0)
	b = binary.NativeEndian.AppendUint16(b, 0)
	b = binary.NativeEndian.AppendUint32(b, uint32(ifindex))
	b = binary.NativeEndian.AppendUint32(b, syscall.IFF_UP)
	b = binary.NativeEndian.AppendUint32(b, syscall.IFF_UP)
	return s.request(syscall.RTM_NEWLINK, 0, b)
}

// replaceAddr gives the link the IPv4 address p, with the broadcast
// address of its prefix (ip addr replace p broadcast + dev).
func (s *routeSocket) replaceAddr(ifindex int, p netip.Prefix) error {
	if !p.Addr().Is4() {
		return fmt.Errorf("address %s: not IPv4", p)
	}
	// struct ifaddrmsg: family, prefix length, flags, scope, index.
	b := []byte{syscall.AF_INET, byte(p.Bits()), 0, syscall.RT_SCOPE_UNIVERSE}
	b = binary.NativeEndian.AppendUint32(b, uint32(ifindex))
	ip := p.Addr().As4()
	b = appendAttr(b, syscall.IFA_LOCAL, ip[:])
	b = appendAttr(b, syscall.IFA_ADDRESS, ip[:])
	if p.Bits() < 31 { // /31 and /32 have no broadcast address
		brd := binary.BigEndian.Uint32(ip[:]) | (1<<(32-p.Bits()) - 1)
		b = appendAttr(b, syscall.IFA_BROADCAST, binary.BigEndian.AppendUint32(nil, brd))
	}
	return s.request(syscall.RTM_NEWADDR, syscall.NLM_F_CREATE|syscall.NLM_F_REPLACE, b)
}

// replaceDefaultRoute routes everything through gw on the link (ip route
// replace default via gw dev link proto boot).
func (s *routeSocket) replaceDefaultRoute(ifindex int, gw netip.Addr) error {
	if !gw.Is4() {
		return fmt.Errorf("gateway %s: not IPv4", gw)
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
	// type, flags.
	b := []byte{syscall.AF_INET, 0, 0, 0, syscall.RT_TABLE_MAIN, syscall.RTPROT_BOOT, syscall.RT_SCOPE_UNIVERSE, syscall.RTN_UNICAST}
	b = binary.NativeEndian.AppendUint32(b, 0)
	ip := gw.As4()
	b = appendAttr(b, syscall.RTA_GATEWAY, ip[:])
	b = appendAttr(b, syscall.RTA_OIF, binary.NativeEndian.AppendUint32(nil, uint32(ifindex)))
	return s.request(syscall.RTM_NEWROUTE, syscall.NLM_F_CREATE|syscall.NLM_F_REPLACE, b)
}

// appendAttr appends a route attribute (struct rtattr and its data,
// padded to four bytes).
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(syscall.SizeofRtAttr+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%syscall.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

// request sends one message and waits for the kernel's acknowledgement,
// returning the error it reports.
func (s *routeSocket) request(typ, flags uint16, body []byte) error {
	s.seq++
	msg := binary.NativeEndian.AppendUint32(nil, uint32(syscall.NLMSG_HDRLEN+len(body)))
	msg = binary.NativeEndian.AppendUint16(msg, typ)
	msg = binary.NativeEndian.AppendUint16(msg, syscall.NLM_F_REQUEST|syscall.NLM_F_ACK|flags)
	msg = binary.NativeEndian.AppendUint32(msg, s.seq)
	msg = binary.NativeEndian.AppendUint32(msg, 0) // port ID: the kernel fills it in
	msg = append(msg, body...)
	if err := syscall.Sendto(s.fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := syscall.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != s.seq || m.Header.Type != syscall.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("netlink: short acknowledgement")
			}
			// struct nlmsgerr: a negated errno, 0 for success.
			if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
				return syscall.Errno(-errno)
			}
			return nil
		}
	}
}
