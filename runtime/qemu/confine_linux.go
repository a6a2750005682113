package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"roost.dev/roost/runtime/microvm"
)

// sandboxPolicy is QEMU's seccomp filter (-sandbox), as libvirt sets it:
// on top of QEMU's allow-list of system calls, no obsolete ones, no
// set*uid/set*gid (the VMM never regains root, nor changes to another
// sandbox's uid), no fork or exec (it starts no helper a guest could
// steer), and no changes of scheduling, affinity or priority.
const sandboxPolicy = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// QEMU runs as the sandbox's VMM uid (microvm.Machine.Credential), which
// can open none of the files it needs: the agent opens them and passes
// them as descriptors. confinedArgs turns a saved command line, which
// names the files by path (and may come from an older agent), into the
// one QEMU is started with:
//
//	-drive file=DISK,backing.file.filename=BASE  → fd sets (/dev/fdset/N)
//	-netdev tap,ifname=tap0                      → tap,fd=N
//	-qmp unix:SOCKET                             → a socket chardev on fd N, listening
//	-kernel, -initrd PATH                        → /proc/self/fd/N
//
// and adds the seccomp filter. launchFiles holds the descriptors, which
// QEMU finds from firstFD on.
type launchFiles struct {
	files   []*os.File
	firstFD int
	nextSet int // the next fd set; set 1 is the console's
}

// add passes f to QEMU and returns its descriptor there.
func (lf *launchFiles) add(f *os.File) int {
	lf.files = append(lf.files, f)
	return lf.firstFD + len(lf.files) - 1
}

func (lf *launchFiles) close() {
	for _, f := range lf.files {
		f.Close()
	}
}

// fdSet opens path once per flag, puts the descriptors into a new fd set
// and returns the -add-fd arguments and the set's path for QEMU (which
// picks the descriptor whose access mode it needs).
func (lf *launchFiles) fdSet(path string, flags ...int) ([]string, string, error) {
	set := lf.nextSet
	lf.nextSet++
	var args []string
	for _, fl := range flags {
		f, err := os.OpenFile(path, fl|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, "", err
		}
		args = append(args, "-add-fd", "fd="+strconv.Itoa(lf.add(f))+",set="+strconv.Itoa(set))
	}
	return args, "/dev/fdset/" + strconv.Itoa(set), nil
}

// confinedArgs is args as QEMU is started with them for m, with the
// files it needs opened (see launchFiles). The caller closes the files
// once QEMU has started.
func (v *vmm) confinedArgs(m *microvm.Machine, args []string, firstFD int) (_ []string, _ *launchFiles, err error) {
	lf := &launchFiles{firstFD: firstFD, nextSet: 2}
	defer func() {
		if err != nil {
			lf.close() // a failure returns no files: close what was opened
		}
	}()
	var out []string
	var addFDs []string
	if !v.cfg.NoSandbox {
		out = append(out, "-sandbox", sandboxPolicy)
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if i+1 == len(args) {
			out = append(out, a)
			break
		}
		val := args[i+1]
		switch a {
		case "-drive":
			add, drive, err := v.confineDrive(lf, val)
			if err != nil {
				return nil, nil, err
			}
			addFDs = append(addFDs, add...)
			out = append(out, a, drive)
		case "-netdev":
			netdev, err := confineTap(m, lf, val)
			if err != nil {
				return nil, nil, err
			}
			out = append(out, a, netdev)
		case "-qmp":
			f, err := listenQMP(val)
			if err != nil {
				return nil, nil, err
			}
			out = append(out, "-chardev", "socket,id=qmp,fd="+strconv.Itoa(lf.add(f))+",server=on,wait=off", "-mon", "chardev=qmp,mode=control")
		case "-kernel", "-initrd":
			f, err := os.Open(val)
			if err != nil {
				return nil, nil, fmt.Errorf("qemu %s: %w", a, err)
			}
			out = append(out, a, "/proc/self/fd/"+strconv.Itoa(lf.add(f)))
		default:
			out = append(out, a, val)
		}
		i++
	}
	return append(addFDs, out...), lf, nil
}

// confineDrive is a -drive value with its image and its backing image in
// fd sets. A saved command line of an older agent has no backing image
// on it: it is read from the image's header then, and taken only from the
// driver's own template images.
func (v *vmm) confineDrive(lf *launchFiles, val string) ([]string, string, error) {
	opts := splitOpts(val)
	disk, ok := opts.get("file")
	if !ok {
		return nil, val, nil
	}
	base, ok := opts.get("backing.file.filename")
	if !ok && opts.has("format=qcow2") {
		b, err := qcow2Backing(disk)
		if err != nil {
			return nil, "", err
		}
		if b != "" {
			if filepath.Dir(b) != filepath.Join(v.cfg.DataDir, "images") {
				return nil, "", fmt.Errorf("disk %s: backing image %q is not a template image", disk, b)
			}
			base = b
			opts = append(opts, "backing.driver=raw", "backing.file.filename="+b)
		}
	}
	modes := []int{os.O_RDWR, os.O_RDONLY}
	if opts.has("read-only=on") {
		modes = []int{os.O_RDONLY} // a volume mounted read-only
	}
	add, diskSet, err := lf.fdSet(disk, modes...)
	if err != nil {
		return nil, "", fmt.Errorf("disk: %w", err)
	}
	opts.set("file", diskSet)
	if base != "" {
		more, baseSet, err := lf.fdSet(base, os.O_RDONLY)
		if err != nil {
			return nil, "", fmt.Errorf("template image: %w", err)
		}
		add = append(add, more...)
		opts.set("backing.file.filename", baseSet)
	}
	return add, opts.String(), nil
}

// confineTap is a -netdev value of the TAP device with the device opened
// by the agent in the sandbox's namespace.
func confineTap(m *microvm.Machine, lf *launchFiles, val string) (string, error) {
	opts := splitOpts(val)
	if len(opts) == 0 || opts[0] != "tap" {
		return val, nil
	}
	tap, err := microvm.OpenTap(m.Netns)
	if err != nil {
		return "", err
	}
	id, _ := opts.get("id")
	return "tap,id=" + id + ",fd=" + strconv.Itoa(lf.add(tap)), nil
}

// listenQMP makes QEMU's QMP socket from a -qmp value (unix:PATH,...),
// listening, for QEMU to accept on: root's, so that only the agent can
// connect, and made in the state directory, which QEMU's uid cannot
// write.
func listenQMP(val string) (*os.File, error) {
	path, ok := strings.CutPrefix(splitOpts(val)[0], "unix:")
	if !ok {
		return nil, fmt.Errorf("qmp %q: not a unix socket", val)
	}
	_ = os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("qmp socket: %w", err)
	}
	l.SetUnlinkOnClose(false) // QEMU listens on it from now on
	defer l.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("qmp socket: %w", err)
	}
	f, err := l.File()
	if err != nil {
		return nil, fmt.Errorf("qmp socket: %w", err)
	}
	return f, nil
}

// qcow2Backing reads the backing file name from a qcow2 image's header
// (version 2 and 3 share the fields: offset at 8, size at 16).
func qcow2Backing(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("disk: %w", err)
	}
	defer f.Close()
	var h [20]byte
	if _, err := io.ReadFull(f, h[:]); err != nil || string(h[:4]) != "QFI\xfb" {
		return "", fmt.Errorf("disk %s: not a qcow2 image", path)
	}
	off, size := binary.BigEndian.Uint64(h[8:]), binary.BigEndian.Uint32(h[16:])
	if off == 0 || size == 0 {
		return "", nil
	}
	if size > 1023 {
		return "", fmt.Errorf("disk %s: backing file name of %d bytes", path, size)
	}
	name := make([]byte, size)
	if _, err := f.ReadAt(name, int64(off)); err != nil {
		return "", fmt.Errorf("disk %s: backing file name: %w", path, err)
	}
	return string(name), nil
}

// opts is a QEMU option string split at its commas (",," is a comma in a
// value).
type opts []string

func splitOpts(s string) opts {
	var out opts
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteString(",,")
				i++
				continue
			}
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	return append(out, cur.String())
}

func (o opts) String() string { return strings.Join(o, ",") }

func (o opts) has(kv string) bool {
	for _, e := range o {
		if e == kv {
			return true
		}
	}
	return false
}

// get is key's value, unescaped.
func (o opts) get(key string) (string, bool) {
	for _, e := range o {
		if v, ok := strings.CutPrefix(e, key+"="); ok {
			return strings.ReplaceAll(v, ",,", ","), true
		}
	}
	return "", false
}

// set replaces key's value with v (which holds no comma).
func (o opts) set(key, v string) {
	for i, e := range o {
		if strings.HasPrefix(e, key+"=") {
			o[i] = key + "=" + v
		}
	}
}

// probeSandbox starts QEMU with the seccomp filter and no machine, and
// asks it over QMP on stdio to quit: it fails when QEMU was built without
// seccomp or the kernel refuses the filter.
func probeSandbox(ctx context.Context, qemu string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-sandbox", sandboxPolicy, "-M", "none", "-nodefaults", "-display", "none", "-S", "-qmp", "stdio")
	cmd.Stdin = strings.NewReader(`{"execute":"qmp_capabilities"}` + "\n" + `{"execute":"quit"}` + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s has no usable seccomp filter (-sandbox): %w: %s", qemu, err, strings.TrimSpace(microvm.LastLines(out.String(), 3)))
	}
	if !strings.Contains(out.String(), `"return"`) {
		return errors.New(qemu + " -sandbox: no QMP answer")
	}
	return nil
}

// kvmGroup is the group that may open /dev/kvm, for a VMM that runs under
// KVM: its gid is added to the VMM's groups.
func kvmGroup(dev string) []uint32 {
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil || st.Mode&0o060 != 0o060 {
		return nil
	}
	return []uint32{st.Gid}
}
