// Package portforward makes servers that listen only on loopback inside a
// sandbox reachable on the sandbox's external IPv4 addresses, so the control
// plane's proxy, which dials the sandbox's own address, can reach them. It is
// the job `socat` does in other systems, done in Go.
//
// A Forwarder polls the kernel's listening TCP sockets (over sock_diag;
// /proc/net/tcp and /proc/net/tcp6 where that is missing): four times a
// second while the sandbox is in use (every request to envd but /health
// counts), less and less often, down to every 30 s, as it sits idle (and
// from its start until the first request), since every poll costs in
// proportion to the sandboxes on the host. A proxy
// that finds a sandbox's port refusing connections asks envd to look at
// once (GET wire.EnvdScanPath), so a loopback server that starts long
// after anyone used the sandbox is forwarded within the proxy's retries.
// PortsNow answers from a scan made after it is asked. For each port on which
// only loopback addresses (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104) listen,
// it listens on the same port on every external IPv4 address and splices
// each accepted connection to the loopback server, keeping TCP half-closes.
// When the loopback server goes away, the forward and its connections are
// closed. Ports that a wildcard or non-loopback socket already serves are
// reported by Ports but not forwarded.
//
// A forwarding listener holds its port on the external addresses, so a
// server that binds the wildcard address on a port that is still forwarded
// fails with EADDRINUSE until the scan after the loopback server left (at most
// about one interval).
//
// It does not authorize traffic (the proxy and the sandbox's network rules
// do), forward UDP, or choose which address the proxy dials.
package portforward
