package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// chaosNet is the chaos test's network: a bridge on the host whose
// address the control-plane replicas listen on, and a network namespace
// per agent, linked to the bridge, with an address of its own. All its
// addresses are in chaosSubnet, made here and removed after the test.
type chaosNet struct {
	bridge string
	hosts  []chaosHost
}

// chaosHost is one agent's namespace.
type chaosHost struct {
	netns string // ip netns name
	link  string // the host end of its link, on the bridge
	addr  string // its address
}

// chaosSubnet is the test network's /24; .1 is the bridge.
const chaosSubnet = "10.213.77"

func newChaosNet(t *testing.T, n int) *chaosNet {
	t.Helper()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	tag := hex.EncodeToString(b)
	c := &chaosNet{bridge: "rcb" + tag}
	t.Cleanup(c.remove)
	ip(t, "link", "add", c.bridge, "type", "bridge")
	ip(t, "addr", "add", chaosSubnet+".1/24", "dev", c.bridge)
	ip(t, "link", "set", c.bridge, "up")
	for i := range n {
		h := chaosHost{netns: fmt.Sprintf("rcn%s%d", tag, i), link: fmt.Sprintf("rcl%s%d", tag, i), addr: fmt.Sprintf("%s.%d", chaosSubnet, 11+i)}
		c.hosts = append(c.hosts, h)
		ip(t, "netns", "add", h.netns)
		ip(t, "link", "add", h.link, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
		ip(t, "link", "set", h.link, "master", c.bridge, "up")
		ip(t, "-n", h.netns, "addr", "add", h.addr+"/24", "dev", "eth0")
		ip(t, "-n", h.netns, "link", "set", "eth0", "up")
		ip(t, "-n", h.netns, "link", "set", "lo", "up")
		ip(t, "-n", h.netns, "route", "add", "default", "via", chaosSubnet+".1")
	}
	return c
}

// partition cuts host i off from everything (its link down), or heals it.
func (c *chaosNet) partition(t *testing.T, i int, cut bool) {
	t.Helper()
	state := "up"
	if cut {
		state = "down"
	}
	ip(t, "link", "set", c.hosts[i].link, state)
}

func (c *chaosNet) remove() {
	for _, h := range c.hosts {
		_ = exec.Command("ip", "netns", "del", h.netns).Run()
		_ = exec.Command("ip", "link", "del", h.link).Run()
	}
	_ = exec.Command("ip", "link", "del", c.bridge).Run()
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}
