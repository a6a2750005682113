package server

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// machineIdentity is what /init may give a sandbox's machine besides
// E2B's fields (roost's own, which E2B's envd ignores): a fork starts
// with its source's hostname, and a VM fork with its kernel random state
// too, so every fork would make the same "random" numbers until told.
type machineIdentity struct {
	// Hostname becomes the machine's hostname, in /etc/hostname and
	// /etc/hosts too.
	Hostname string `json:"hostname,omitempty"`
	// Entropy is mixed into the kernel's random pool, which is then
	// reseeded at once (base64 in JSON, 16 to 512 bytes).
	Entropy []byte `json:"entropy,omitempty"`
}

// check refuses what envd would not do: a hostname from an envd whose
// sandbox has none of its own, entropy from one that is not a VM guest's
// (either would change its host), or a malformed identity.
func (id machineIdentity) check(guest, ownHostname bool) error {
	if id.Hostname != "" && !ownHostname {
		return errors.New("hostname: this envd's sandbox has no hostname of its own (not started with -guest or -own-hostname)")
	}
	if id.Entropy != nil && !guest {
		return errors.New("entropy: this envd does not own its machine (not started with -guest)")
	}
	if id.Hostname != "" && !validHostname(id.Hostname) {
		return fmt.Errorf("hostname %q: want 1 to 63 letters, digits and dashes, not starting or ending with a dash", id.Hostname)
	}
	if id.Entropy != nil && (len(id.Entropy) < 16 || len(id.Entropy) > 512) {
		return fmt.Errorf("entropy: %d bytes, want 16 to 512", len(id.Entropy))
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 63 || strings.HasPrefix(h, "-") || strings.HasSuffix(h, "-") {
		return false
	}
	return strings.IndexFunc(h, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-')
	}) < 0
}

// apply gives the machine the identity (check passed).
func (id machineIdentity) apply() error {
	if id.Entropy != nil {
		if err := reseed(id.Entropy); err != nil {
			return fmt.Errorf("entropy: %w", err)
		}
	}
	if id.Hostname != "" {
		if err := setHostname(id.Hostname); err != nil {
			return fmt.Errorf("hostname: %w", err)
		}
	}
	return nil
}

// reseed credits b to the kernel's input pool (RNDADDENTROPY) and has the
// kernel reseed its generator from the pool now (RNDRESEEDCRNG) rather
// than at its next periodic reseed.
func reseed(b []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info: entropy_count (bits), buf_size (bytes), buf.
	info := make([]byte, 8+len(b))
	*(*int32)(unsafe.Pointer(&info[0])) = int32(8 * len(b))
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(b))
	copy(info[8:], b)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0]))); e != 0 {
		return fmt.Errorf("add entropy: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("reseed: %w", e)
	}
	return nil
}

// setHostname sets the machine's hostname and the files that name it as
// the guest init wrote them (/etc/hostname, /etc/hosts' 127.0.1.1 line).
// A namespace sandbox's driver has set the hostname already (its root
// may not), and only the files are left.
func setHostname(name string) error {
	if cur, err := os.Hostname(); err != nil || cur != name {
		if err := unix.Sethostname([]byte(name)); err != nil {
			return err
		}
	}
	if err := os.WriteFile("/etc/hostname", []byte(name+"\n"), 0o644); err != nil {
		return err
	}
	b, err := os.ReadFile("/etc/hosts")
	if err != nil {
		return err
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "127.0.1.1") {
			lines[i] = "127.0.1.1\t" + name
		}
	}
	return os.WriteFile("/etc/hosts", []byte(strings.Join(lines, "\n")), 0o644)
}
