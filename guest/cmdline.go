package guest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Config is what the host tells the guest through the kernel command line,
// as roost.* parameters (the kernel ignores dotted names it does not
// know, and passes them to no one else).
type Config struct {
	// Address and Gateway configure eth0: roost.ip=ADDR/PREFIX,GW.
	Address netip.Prefix
	Gateway netip.Addr
	// DNS are the resolvers for /etc/resolv.conf: roost.dns=IP,IP.
	DNS []netip.Addr
	// Hostname: roost.hostname=NAME.
	Hostname string
	// Clock is the host's time at launch, the floor for the guest's
	// clock when it has no better source: roost.clock=UNIX-SECONDS.
	Clock time.Time
	// Env is envd's starting environment: roost.env=base64url(JSON object).
	Env map[string]string
	// Root is the root block device: roost.root=/dev/vda.
	Root string
	// Volumes are block devices to mount, found by their serial:
	// roost.volumes=base64url(JSON array of Volume).
	Volumes []Volume
	// Modules holds parameters for modules, from module.param=value words
	// (the kernel applies them only to built-in code, so the initramfs
	// passes them on when it loads a module).
	Modules map[string][]string
}

// String renders c as kernel command-line words.
func (c Config) String() string {
	var w []string
	if c.Address.IsValid() {
		w = append(w, "roost.ip="+c.Address.String()+","+c.Gateway.String())
	}
	if len(c.DNS) > 0 {
		s := make([]string, len(c.DNS))
		for i, a := range c.DNS {
			s[i] = a.String()
		}
		w = append(w, "roost.dns="+strings.Join(s, ","))
	}
	if c.Hostname != "" {
		w = append(w, "roost.hostname="+c.Hostname)
	}
	if !c.Clock.IsZero() {
		w = append(w, "roost.clock="+strconv.FormatInt(c.Clock.Unix(), 10))
	}
	if len(c.Env) > 0 {
		b, _ := json.Marshal(c.Env)
		w = append(w, "roost.env="+base64.RawURLEncoding.EncodeToString(b))
	}
	if c.Root != "" {
		w = append(w, "roost.root="+c.Root)
	}
	if len(c.Volumes) > 0 {
		b, _ := json.Marshal(c.Volumes)
		w = append(w, "roost.volumes="+base64.RawURLEncoding.EncodeToString(b))
	}
	return strings.Join(w, " ")
}

// Volume is a volume the init mounts (docs/persistence.md): the ext4
// filesystem on the virtio block device whose serial is Serial (the
// driver sets it; the guest has no udev, so the init reads
// /sys/block/*/serial), at Path, read-only when ReadOnly.
type Volume struct {
	Serial   string `json:"serial"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"ro,omitempty"`
}

// ParseCmdline reads the roost.* words (and module parameters) of a kernel
// command line. Unknown words are ignored; malformed roost.* values are
// errors.
func ParseCmdline(line string) (Config, error) {
	c := Config{Root: "/dev/vda", Modules: map[string][]string{}}
	for _, word := range strings.Fields(line) {
		key, val, ok := strings.Cut(word, "=")
		if !ok {
			continue
		}
		var err error
		switch key {
		case "roost.ip":
			addr, gw, _ := strings.Cut(val, ",")
			if c.Address, err = netip.ParsePrefix(addr); err == nil && gw != "" {
				c.Gateway, err = netip.ParseAddr(gw)
			}
		case "roost.dns":
			for _, s := range strings.Split(val, ",") {
				a, perr := netip.ParseAddr(s)
				if perr != nil {
					err = perr
					break
				}
				c.DNS = append(c.DNS, a)
			}
		case "roost.hostname":
			c.Hostname = val
		case "roost.clock":
			var n int64
			if n, err = strconv.ParseInt(val, 10, 64); err == nil {
				c.Clock = time.Unix(n, 0)
			}
		case "roost.env":
			var b []byte
			if b, err = base64.RawURLEncoding.DecodeString(val); err == nil {
				err = json.Unmarshal(b, &c.Env)
			}
		case "roost.root":
			c.Root = val
		case "roost.volumes":
			var b []byte
			if b, err = base64.RawURLEncoding.DecodeString(val); err == nil {
				err = json.Unmarshal(b, &c.Volumes)
			}
		default:
			if mod, param, ok := strings.Cut(key, "."); ok && !strings.HasPrefix(key, "roost.") && mod != "" && param != "" {
				mod = strings.ReplaceAll(mod, "-", "_")
				c.Modules[mod] = append(c.Modules[mod], param+"="+val)
			}
			continue
		}
		if err != nil {
			return c, fmt.Errorf("kernel command line %s: %w", key, err)
		}
	}
	return c, nil
}

// envList renders Env for exec, with a default PATH and HOME.
func (c Config) envList() []string {
	env := map[string]string{
		"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME": "/root", "USER": "root",
	}
	for k, v := range c.Env {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}
