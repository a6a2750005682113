package confine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"syscall"

	bpfseccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	profile "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
)

// Capability is a Linux capability by name and number.
type Capability struct {
	Name   string
	Number int
}

// Capabilities are the capabilities a sandbox keeps: Docker's default
// set. Every other is dropped from the bounding, permitted, effective,
// inheritable and ambient sets before envd starts, so no process in the
// sandbox, root or a setuid program, can gain one.
var Capabilities = []Capability{
	{"CAP_CHOWN", 0},
	{"CAP_DAC_OVERRIDE", 1},
	{"CAP_FOWNER", 3},
	{"CAP_FSETID", 4},
	{"CAP_KILL", 5},
	{"CAP_SETGID", 6},
	{"CAP_SETUID", 7},
	{"CAP_SETPCAP", 8},
	{"CAP_NET_BIND_SERVICE", 10},
	{"CAP_NET_RAW", 13},
	{"CAP_SYS_CHROOT", 18},
	{"CAP_MKNOD", 27},
	{"CAP_AUDIT_WRITE", 29},
	{"CAP_SETFCAP", 31},
}

// CapabilityNumbers returns the numbers of Capabilities.
func CapabilityNumbers() []int {
	out := make([]int, len(Capabilities))
	for i, c := range Capabilities {
		out[i] = c.Number
	}
	return out
}

func capabilityNames() []string {
	out := make([]string, len(Capabilities))
	for i, c := range Capabilities {
		out[i] = c.Name
	}
	return out
}

// denied are system calls a sandbox must never make, whatever a later
// version of Docker's profile says: an allow rule naming one is dropped.
// Docker's profile denies them all today for the capabilities above.
var denied = []string{
	"unshare", "setns",
	"keyctl", "add_key", "request_key",
	"bpf", "perf_event_open",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
	"init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
	"mount", "umount2", "pivot_root", "move_mount", "fsopen", "fsmount", "fsconfig", "fspick", "open_tree", "mount_setattr",
	"open_by_handle_at", "userfaultfd",
	"swapon", "swapoff", "reboot", "acct", "quotactl", "quotactl_fd",
	"clock_settime", "settimeofday",
	"syslog", "iopl", "ioperm", "lookup_dcookie", "fanotify_init", "vhangup",
}

// Filter returns the seccomp filter of sandboxes on this host, compiled
// once: a classic BPF program as struct sock_filter entries in native byte
// order, what seccomp(2) and prctl(PR_SET_SECCOMP) take.
func Filter() ([]byte, error) { return compiled() }

var compiled = sync.OnceValues(func() ([]byte, error) {
	prog, err := Program()
	if err != nil {
		return nil, err
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble syscall filter: %w", err)
	}
	return encode(raw)
})

// maxInstructions is the kernel's limit on a filter's length (BPF_MAXINSNS).
const maxInstructions = 4096

func encode(raw []bpf.RawInstruction) ([]byte, error) {
	if len(raw) > maxInstructions {
		return nil, fmt.Errorf("syscall filter has %d instructions, more than the kernel's %d", len(raw), maxInstructions)
	}
	b := make([]byte, 0, 8*len(raw))
	for _, r := range raw {
		b = binary.NativeEndian.AppendUint16(b, r.Op)
		b = append(b, r.Jt, r.Jf)
		b = binary.NativeEndian.AppendUint32(b, r.K)
	}
	return b, nil
}

// Program returns the filter as BPF instructions.
func Program() ([]bpf.Instruction, error) {
	p, err := Policy()
	if err != nil {
		return nil, err
	}
	prog, err := p.Assemble()
	if err != nil {
		return nil, fmt.Errorf("assemble syscall filter: %w", err)
	}
	return prog, nil
}

// Policy returns Docker's default profile resolved for Capabilities and
// this host's architecture and kernel, as a policy for the native ABI.
func Policy() (*bpfseccomp.Policy, error) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: capabilityNames()}}}
	resolved, err := profile.GetDefaultProfile(spec)
	if err != nil {
		return nil, fmt.Errorf("resolve docker's default seccomp profile: %w", err)
	}
	info, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("syscall filter: %w", err)
	}
	return translate(resolved, info)
}

// rules gathers, per action, the syscalls it matches and their argument
// conditions, in the order the profile names them.
type rules struct {
	actions []bpfseccomp.Action
	names   map[bpfseccomp.Action][]string
	conds   map[string][]bpfseccomp.ArgumentConditions // nil: unconditional
	action  map[string]bpfseccomp.Action
}

// translate turns a resolved profile into a policy for the ABI of info.
// Names the ABI does not have (the 32-bit variants and other
// architectures' calls Docker's profile lists for all) are left out, which
// leaves them denied.
func translate(p *specs.LinuxSeccomp, info *arch.Info) (*bpfseccomp.Policy, error) {
	if p.DefaultAction != specs.ActErrno || (p.DefaultErrnoRet != nil && *p.DefaultErrnoRet != uint(syscall.EPERM)) {
		return nil, fmt.Errorf("syscall filter: profile's default action is %s, want EPERM", p.DefaultAction)
	}
	r := rules{names: map[bpfseccomp.Action][]string{}, conds: map[string][]bpfseccomp.ArgumentConditions{}, action: map[string]bpfseccomp.Action{}}
	for _, rule := range p.Syscalls {
		action, err := actionOf(rule)
		if err != nil {
			return nil, err
		}
		conds, err := conditionsOf(rule.Args)
		if err != nil {
			return nil, fmt.Errorf("syscall filter: rule for %v: %w", rule.Names, err)
		}
		for _, name := range rule.Names {
			if _, ok := info.SyscallNames[name]; !ok || (action == bpfseccomp.ActionAllow && slices.Contains(denied, name)) {
				continue
			}
			if err := r.add(name, action, conds); err != nil {
				return nil, err
			}
		}
	}
	return r.policy(), nil
}

func (r *rules) add(name string, action bpfseccomp.Action, conds bpfseccomp.ArgumentConditions) error {
	prev, seen := r.action[name]
	switch {
	case !seen:
		r.action[name] = action
		if !slices.Contains(r.actions, action) {
			r.actions = append(r.actions, action)
		}
		r.names[action] = append(r.names[action], name)
		if conds != nil {
			r.conds[name] = []bpfseccomp.ArgumentConditions{conds}
		}
	case prev != action:
		return fmt.Errorf("syscall filter: %s has rules of two actions", name)
	case conds == nil:
		delete(r.conds, name) // an unconditional rule covers every condition
	case r.conds[name] != nil:
		r.conds[name] = append(r.conds[name], conds)
	}
	return nil
}

// policy is the rules as a policy; assembled, it takes the running
// program's architecture, the one translate looked the names up in.
func (r *rules) policy() *bpfseccomp.Policy {
	p := &bpfseccomp.Policy{DefaultAction: bpfseccomp.ActionErrno}
	for _, action := range r.actions {
		g := bpfseccomp.SyscallGroup{Action: action}
		for _, name := range r.names[action] {
			if conds := r.conds[name]; conds != nil {
				for _, c := range conds {
					g.NamesWithCondtions = append(g.NamesWithCondtions, bpfseccomp.NameWithConditions{Name: name, Conditions: c})
				}
			} else {
				g.Names = append(g.Names, name)
			}
		}
		p.Syscalls = append(p.Syscalls, g)
	}
	return p
}

// actionOf maps a rule's action to the filter's: allow, or an errno.
func actionOf(rule specs.LinuxSyscall) (bpfseccomp.Action, error) {
	switch rule.Action {
	case specs.ActAllow:
		return bpfseccomp.ActionAllow, nil
	case specs.ActErrno:
		errno := uint(syscall.EPERM)
		if rule.ErrnoRet != nil {
			errno = *rule.ErrnoRet
		}
		if errno == 0 || errno > 0xffff {
			return 0, fmt.Errorf("syscall filter: rule for %v returns errno %d", rule.Names, errno)
		}
		// The filter's return value carries the errno in its low 16 bits;
		// plain ActionErrno is assembled as EPERM.
		if errno == uint(syscall.EPERM) {
			return bpfseccomp.ActionErrno, nil
		}
		return bpfseccomp.ActionErrno | bpfseccomp.Action(errno), nil
	}
	return 0, fmt.Errorf("syscall filter: rule for %v has action %s, which roost does not use", rule.Names, rule.Action)
}

var errMaskedEqual = errors.New("a masked comparison with a non-zero result cannot be expressed")

// conditionsOf maps a rule's argument comparisons, all of which must hold.
func conditionsOf(args []specs.LinuxSeccompArg) (bpfseccomp.ArgumentConditions, error) {
	if len(args) == 0 {
		return nil, nil
	}
	var out bpfseccomp.ArgumentConditions
	for _, a := range args {
		c := bpfseccomp.Condition{Argument: uint32(a.Index), Value: a.Value}
		switch a.Op {
		case specs.OpEqualTo:
			c.Operation = bpfseccomp.Equal
		case specs.OpNotEqual:
			c.Operation = bpfseccomp.NotEqual
		case specs.OpLessThan:
			c.Operation = bpfseccomp.LessThan
		case specs.OpLessEqual:
			c.Operation = bpfseccomp.LessOrEqual
		case specs.OpGreaterThan:
			c.Operation = bpfseccomp.GreaterThan
		case specs.OpGreaterEqual:
			c.Operation = bpfseccomp.GreaterOrEqual
		case specs.OpMaskedEqual:
			// arg & mask == 0 is "none of mask's bits set".
			if a.ValueTwo != 0 {
				return nil, errMaskedEqual
			}
			c.Operation = bpfseccomp.BitsNotSet
		default:
			return nil, fmt.Errorf("comparison %s is not supported", a.Op)
		}
		if a.Index > 5 {
			return nil, fmt.Errorf("argument %d does not exist", a.Index)
		}
		out = append(out, c)
	}
	return out, nil
}
