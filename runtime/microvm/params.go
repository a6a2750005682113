package microvm

import (
	"encoding/base64"
	"encoding/json"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"roost.dev/roost/runtime"
)

// MaxCmdline is the longest kernel command line a driver may build: the
// x86 kernel's COMMAND_LINE_SIZE (2048) less a margin for what a VMM
// appends (Firecracker adds root=, QEMU its own words).
const MaxCmdline = 2048 - 128

// GuestParams are the roost.* kernel command-line words that configure
// the guest init (package guest parses them): the guest's fixed address,
// the host's resolvers, hostname, the host clock as a floor, envd's
// starting environment, the root device, and the volumes to mount.
func GuestParams(spec runtime.Spec, root string) []string {
	w := []string{"roost.ip=" + GuestAddr.String() + "," + GuestGW.String(), "roost.root=" + root}
	dns := hostNameservers()
	if spec.Network.DNS != nil {
		// The resolvers the network manager opened to the sandbox.
		dns = make([]string, len(spec.Network.DNS))
		for i, a := range spec.Network.DNS {
			dns[i] = a.String()
		}
	}
	if len(dns) > 0 {
		w = append(w, "roost.dns="+strings.Join(dns, ","))
	}
	host := spec.Hostname
	if host == "" {
		host = spec.ID
	}
	w = append(w, "roost.hostname="+host, "roost.clock="+strconv.FormatInt(time.Now().Unix(), 10))
	if len(spec.Env) > 0 {
		b, _ := json.Marshal(spec.Env)
		w = append(w, "roost.env="+base64.RawURLEncoding.EncodeToString(b))
	}
	if p := volumesParam(spec); p != "" {
		w = append(w, p)
	}
	return w
}

// hostNameservers are the host's resolvers, without loopback ones (which
// mean nothing in a guest).
func hostNameservers() []string {
	b, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() && !a.IsLoopback() {
				out = append(out, a.String())
			}
		}
	}
	return out
}

// LastLines is the end of a VMM's log, for an error message.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
