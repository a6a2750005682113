package portforward

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// diagListeners asks the kernel for this network namespace's listening TCP
// sockets over netlink sock_diag. Unlike reading /proc/net/tcp, which walks
// the host-wide connection hash table on every read (about a millisecond on
// a busy host, for each of hundreds of sandboxes), a LISTEN-only dump walks
// just the listening sockets — still every one on the host, of every
// sandbox, so a scan's cost grows with the sandboxes running. The older
// form of the request (TCPDIAG_GETSOCK) returns IPv4 and IPv6 sockets in
// one walk; a kernel that refuses it is asked once per family.
func diagListeners() ([]netip.AddrPort, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	if socks, err := diagDump(fd, tcpDiagGetSock, compatRequest()); err == nil {
		return socks, nil
	}
	var out []netip.AddrPort
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := diagDump(fd, unix.SOCK_DIAG_BY_FAMILY, familyRequest(family))
		if err != nil {
			return nil, err
		}
		out = append(out, socks...)
	}
	return out, nil
}

const (
	tcpListen      = 10
	tcpDiagGetSock = 18 // TCPDIAG_GETSOCK: struct inet_diag_req, both families
	sizeofDiagReq  = 56 // struct inet_diag_req_v2
	sizeofCompReq  = 60 // struct inet_diag_req
	sizeofDiagMsg  = 72 // struct inet_diag_msg
	diagSockIDAddr = 8  // offset of id.idiag_src in inet_diag_msg
)

// familyRequest is a struct inet_diag_req_v2 for family's listening TCP
// sockets.
func familyRequest(family uint8) []byte {
	body := make([]byte, sizeofDiagReq)
	body[0] = family
	body[1] = unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(body[4:], 1<<tcpListen)
	return body
}

// compatRequest is a struct inet_diag_req for listening TCP sockets; the
// kernel reads its family as AF_UNSPEC, both.
func compatRequest() []byte {
	body := make([]byte, sizeofCompReq)
	binary.NativeEndian.PutUint32(body[52:], 1<<tcpListen) // idiag_states, after the 48-byte id
	return body
}

// diagDump sends one dump request of type typ with body and collects the
// addresses of the sockets in the answer.
func diagDump(fd int, typ uint16, body []byte) ([]netip.AddrPort, error) {
	req := make([]byte, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], typ)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1) // sequence
	copy(req[unix.NLMSG_HDRLEN:], body)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []netip.AddrPort
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag reply: %w", err)
		}
		msgs, err := parseDiag(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.typ {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.data)); errno != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return out, nil
			case typ:
				if ap, ok := diagAddr(m.data); ok {
					out = append(out, ap)
				}
			}
		}
	}
}

type nlmsg struct {
	typ  uint16
	data []byte
}

func parseDiag(b []byte) ([]nlmsg, error) {
	var out []nlmsg
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return nil, errors.New("sock_diag: malformed netlink message")
		}
		out = append(out, nlmsg{typ: binary.NativeEndian.Uint16(b[4:]), data: b[unix.NLMSG_HDRLEN:l]})
		b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
	}
	return out, nil
}

// diagAddr reads the local address of one inet_diag_msg.
func diagAddr(m []byte) (netip.AddrPort, bool) {
	if len(m) < sizeofDiagMsg || m[1] != tcpListen {
		return netip.AddrPort{}, false
	}
	port := binary.BigEndian.Uint16(m[4:])
	src := m[diagSockIDAddr : diagSockIDAddr+16]
	var addr netip.Addr
	switch m[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(src[:4]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(src))
	default:
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(addr, port), true
}
