package guest

import (
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// netHelperEnv makes the test binary, run in a network namespace of its
// own, configure the network as the guest does and print the result.
const netHelperEnv = "ROOST_GUEST_NET_HELPER"

// TestConfigureNetwork runs configureNetwork, twice (the changes replace,
// so a second run succeeds and changes nothing), in a fresh network
// namespace holding an eth0 (one end of a veth pair), and checks what `ip` sees.
func TestConfigureNetwork(t *testing.T) {
	if os.Getenv(netHelperEnv) != "" {
		netHelper(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("a network namespace needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestConfigureNetwork$", "-test.v")
	cmd.Env = append(os.Environ(), netHelperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	for _, want := range []string{
		"lo: <LOOPBACK,UP,LOWER_UP>",
		"inet 10.11.0.2/24 brd 10.11.0.255 scope global eth0",
		"unicast default via 10.11.0.1 dev eth0 proto boot scope global",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if strings.Count(string(out), "inet 10.11.0.2/24") != 1 {
		t.Errorf("want one address on eth0:\n%s", out)
	}
}

func netHelper(t *testing.T) {
	if out, err := exec.Command("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0").CombinedOutput(); err != nil {
		t.Fatalf("add eth0: %v: %s", err, out)
	}
	if out, err := exec.Command("ip", "link", "set", "peer0", "up").CombinedOutput(); err != nil {
		t.Fatalf("peer0 up: %v: %s", err, out)
	}
	cfg = Config{Address: netip.MustParsePrefix("10.11.0.2/24"), Gateway: netip.MustParseAddr("10.11.0.1")}
	for range 2 {
		if err := configureNetwork(); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"-o", "link", "show", "lo"}, {"-4", "-o", "addr", "show", "dev", "eth0"}, {"-4", "-d", "route", "show"}} {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		t.Logf("ip %v:\n%s", args, out)
	}
}
