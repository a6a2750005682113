package runtime

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"roost.dev/roost/errdefs"
)

// Runtime creates, runs and destroys sandboxes with one isolation
// technology. Every method takes the sandbox ID after ctx and is safe for
// concurrent use on different sandboxes; calls for the same sandbox are
// serialised by the manager. A sandbox outlives the ctx that created it:
// ctx bounds only the call.
type Runtime interface {
	// Name is the driver's name as flags and the API show it.
	Name() string
	// Capabilities are static: what the driver can do on any host.
	// Pause and Snapshot say whether the driver is a Pauser and a
	// Snapshotter; drivers derive them with CapabilitiesOf.
	Capabilities() Capabilities
	// Probe says whether this host can run the driver, and if not, why.
	// A missing binary or device is an unavailable Availability, not an error.
	Probe(ctx context.Context) Availability
	// Create starts a sandbox and returns once its init runs; it does not
	// wait for envd (the manager does). On failure everything the call
	// acquired is released. The Instance's State is what the manager
	// keeps for Recover.
	Create(ctx context.Context, spec Spec) (Instance, error)
	// Destroy stops the sandbox and removes everything the driver made for
	// it. Destroying an unknown sandbox returns errdefs.ErrNotFound.
	Destroy(ctx context.Context, id string) error
	// Recover re-adopts a sandbox that was running before the agent
	// restarted, from state: the DriverState the manager kept (the last
	// one an Instance or Snapshot returned). A zero state stands for a
	// sandbox an older agent recorded, when drivers kept their state in
	// files of their own: the driver reads that file under spec.StateDir.
	// It returns errdefs.ErrNotFound when the sandbox is gone (after
	// cleaning up what remains of it). Safe to call twice; the Instance's
	// State replaces the one the manager kept.
	Recover(ctx context.Context, spec Spec, state DriverState) (Instance, error)
	// Prune removes whatever the driver left on the host for sandboxes not
	// in keep (mounts, cgroups, processes, files), logging each removal.
	// The manager calls it at start-up, after recovering the sandboxes it
	// knows.
	Prune(ctx context.Context, keep []string) error
	// Stats reports a running sandbox's resource use.
	Stats(ctx context.Context, id string) (Stats, error)
}

// Pauser is implemented by drivers that can freeze a sandbox in place.
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
}

// Snapshotter is implemented by drivers that can hibernate a sandbox: save
// its memory and device state to disk, end its process, and later resume
// it from there. Calls for one sandbox are serialised by the manager.
type Snapshotter interface {
	// Snapshot stops the sandbox, writes its state under its StateDir and
	// ends its process; the sandbox stays known to the driver (Destroy
	// removes it). It returns the driver's state of the hibernated
	// sandbox, which the manager keeps for Restore and Recover. It takes
	// as long as writing the sandbox's memory.
	Snapshot(ctx context.Context, id string) (DriverState, error)
	// Restore resumes a snapshotted sandbox in a new process, on
	// spec.Network (which may differ from the one it was snapshotted on),
	// and returns once its init runs again; the manager waits for envd.
	// spec.StateDir must be the one of the snapshot, and state the one
	// Snapshot returned (a zero state: as for Recover). A driver that
	// snapshotted the sandbox itself goes by what it holds.
	Restore(ctx context.Context, spec Spec, state DriverState) (Instance, error)
}

// Forker is implemented by drivers that can copy a running sandbox:
// capture its memory, device state and disk into a directory, from which
// any number of new sandboxes start where it was, with its processes
// running. A template keeps one taken once its start command is ready.
type Forker interface {
	// Capture pauses sandbox id, writes its capture into dir (a directory
	// the call creates; it must not exist), and lets the sandbox run on as
	// it did, on failure too. It takes as long as writing the sandbox's
	// memory.
	Capture(ctx context.Context, id, dir string) error
	// Fork starts a new sandbox from the capture in dir, as Create does:
	// it returns once the sandbox's init runs again, and the manager
	// waits for envd. spec.Limits must ask for the captured sandbox's
	// memory and vCPUs or leave them zero (else ErrInvalid); its disk is
	// the capture's. dir is only read: it serves any number of forks at
	// once, and no fork needs it once Fork returns. The new sandbox has
	// the captured one's hostname, clock, random state and boot id until
	// the manager gives it its own through envd's /init.
	Fork(ctx context.Context, spec Spec, dir string) (Instance, error)
}

// Mover is implemented by drivers whose hibernated sandboxes can move
// to another host: the sandbox is written out as a directory that the
// driver on the other host takes in as a hibernated sandbox of its own,
// which its Restore then resumes on that host's network (the sandbox's
// address changes; its processes, files and boot go on). The directory
// is self-contained: the template's tree is all the importing host must
// have as well.
type Mover interface {
	// Export writes hibernated sandbox id into dir (a directory the call
	// creates; it must not exist). The sandbox stays hibernated here and
	// unchanged; dir shares its files by hard links where it can, so it
	// costs no copy of the disk. It wraps errdefs.ErrConflict when the
	// sandbox is not hibernated.
	Export(ctx context.Context, id, dir string) error
	// Import makes spec's sandbox, hibernated, from the export in dir,
	// and returns its driver state for Restore. spec gives its ID, state
	// directory, template tree and network; dir is only read.
	Import(ctx context.Context, spec Spec, dir string) (DriverState, error)
}

// Halter is implemented by drivers that can end a sandbox's processes and
// keep its disk, and boot it afresh from that disk later (E2B's
// filesystem-only pause, keepMemory: false). Calls for one sandbox are
// serialised by the manager.
type Halter interface {
	// Halt ends every process of sandbox id and frees its memory and CPU;
	// what it wrote over its template stays. The sandbox stays known to
	// the driver (Destroy removes it). It returns the driver's state of
	// the halted sandbox, which the manager keeps for Boot and Recover.
	Halt(ctx context.Context, id string) (DriverState, error)
	// Boot starts a halted sandbox afresh from its disk, as Create starts
	// one (a new boot), on spec.Network (which may differ from before),
	// and returns once its init runs; the manager waits for envd.
	// spec.StateDir must be the halted sandbox's, and state the one Halt
	// returned.
	Boot(ctx context.Context, spec Spec, state DriverState) (Instance, error)
}

// Renamer is implemented by drivers whose sandboxes' root may not set the
// hostname itself (a namespace sandbox's UTS namespace belongs to the
// host's user namespace): the driver gives running sandbox id the
// hostname. In a VM, envd's /init does it. A warm pool's sandbox gets its
// name this way when a create claims it.
type Renamer interface {
	SetHostname(ctx context.Context, id, hostname string) error
}

// DiskExporter is implemented by drivers that keep a sandbox's files in a
// disk image of its own (the VM runtimes), for the manager to read them:
// a snapshot's layer is what changed from the template's tree.
type DiskExporter interface {
	// ExportDisk writes a copy of the sandbox's disk as a raw filesystem
	// image to dst (sparse where it can). The sandbox must not be writing
	// its disk meanwhile: it is paused, hibernated or halted.
	ExportDisk(ctx context.Context, spec Spec, dst string) error
}

// WrittenLayer is a directory of what a sandbox wrote over the layers
// below it, as an overlay's upper directory holds it (whiteouts for what
// it removed), with the shift of its owners: a file of uid u in the
// sandbox is owned by host uid u+Shift (gids alike).
type WrittenLayer struct {
	Dir   string
	Shift int
}

// CapabilitiesOf describes the driver rt by what it implements: Pause
// when it is a Pauser, Snapshot when a Snapshotter, Fork when a Forker.
// vm is the one fact the type cannot tell. Drivers' Capabilities return
// it, so the flags and the interfaces cannot disagree.
func CapabilitiesOf(rt Runtime, vm bool) Capabilities {
	_, pause := rt.(Pauser)
	_, snapshot := rt.(Snapshotter)
	_, fork := rt.(Forker)
	return Capabilities{Pause: pause, Snapshot: snapshot, Fork: fork, VM: vm}
}

// Capabilities describe a driver.
type Capabilities struct {
	// Pause is true when the driver implements Pauser.
	Pause bool `json:"pause"`
	// Snapshot is true when the driver implements Snapshotter.
	Snapshot bool `json:"snapshot"`
	// Fork is true when the driver implements Forker.
	Fork bool `json:"fork"`
	// VM is true when a sandbox has its own kernel.
	VM bool `json:"vm"`
}

// Availability is Probe's answer.
type Availability struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"` // why not, for humans
}

// LogFile is where, in a sandbox's StateDir, every driver keeps the
// sandbox's console: its init's output and envd's (envd's stderr is the
// init's), and a VM's serial console with its kernel's messages. The log
// lasts as long as the sandbox, across pause, hibernation and agent
// restarts; the agent serves it as the sandbox's log. The sandbox writes
// it only through package console, which keeps it a ring of two files,
// LogFile+".1" (older) and LogFile (newer), LogMaxBytes together.
const LogFile = "init.log"

// LogMaxBytes bounds a sandbox's console log on the host, both files of
// its ring together: the sandbox's root can write to its console at will.
const LogMaxBytes = 4 << 20

// Spec is everything a driver needs to start a sandbox.
type Spec struct {
	ID string
	// StateDir is the sandbox's own directory; the driver keeps its
	// layers, sockets and snapshots there (its state it returns, as a
	// DriverState), and the sandbox's console in LogFile. The manager
	// removes it after Destroy.
	StateDir string
	// RootFS is the template's root filesystem tree (read-only to drivers).
	RootFS string
	// Envd is the envd binary to inject; templates never bake it in.
	Envd string
	// Env is the environment envd starts with; the manager sends the
	// sandbox's own variables later, through envd's /init.
	Env      map[string]string
	Hostname string
	// Metadata is the sandbox's user metadata, for drivers that show it
	// to the guest (firecracker: MMDS).
	Metadata map[string]string
	Limits   Limits
	Network  Network
	// Volumes are mounted in the sandbox, at their paths; a driver that
	// cannot mount them refuses the spec (errdefs.ErrUnsupported).
	Volumes []VolumeMount `json:",omitempty"`
}

// Validate checks what every driver needs of a Spec: an ID usable as a
// file name, a state directory, limits that are not negative, a template
// tree and an envd binary. Drivers check the rest (the network they need).
func (s Spec) Validate() error {
	switch {
	case s.ID == "" || strings.ContainsAny(s.ID, "/\x00") || s.ID == "." || s.ID == "..":
		return fmt.Errorf("sandbox id %q: %w", s.ID, errdefs.ErrInvalid)
	case s.StateDir == "":
		return fmt.Errorf("no state dir: %w", errdefs.ErrInvalid)
	case s.Limits.VCPUs < 0 || s.Limits.MemoryMB < 0 || s.Limits.DiskMB < 0 || s.Limits.Pids < 0:
		return fmt.Errorf("negative limits: %w", errdefs.ErrInvalid)
	}
	if st, err := os.Stat(s.RootFS); err != nil || !st.IsDir() {
		return fmt.Errorf("template root %s is not a directory: %w", s.RootFS, errdefs.ErrInvalid)
	}
	if st, err := os.Stat(s.Envd); err != nil || st.IsDir() {
		return fmt.Errorf("envd binary %s: %w", s.Envd, errdefs.ErrInvalid)
	}
	return nil
}

// Limits bound a sandbox's resources. Zero means the driver's default.
type Limits struct {
	VCPUs    int
	MemoryMB int
	DiskMB   int
	// Pids caps the number of tasks (processes and threads).
	Pids int
}

// Or returns l with each zero field taken from def.
func (l Limits) Or(def Limits) Limits {
	return Limits{
		VCPUs:    cmp.Or(l.VCPUs, def.VCPUs),
		MemoryMB: cmp.Or(l.MemoryMB, def.MemoryMB),
		DiskMB:   cmp.Or(l.DiskMB, def.DiskMB),
		Pids:     cmp.Or(l.Pids, def.Pids),
	}
}

// Network is the plumbing the manager prepared for a sandbox.
type Network struct {
	// Netns is the path of the sandbox's network namespace.
	Netns string
	// Interface is the sandbox-side interface inside Netns.
	Interface string
	// Address is the sandbox's address, reachable from the host.
	Address netip.Prefix
	Gateway netip.Addr
	// DNS are the resolvers the sandbox's resolv.conf names: the only
	// private addresses its firewall lets it reach (port 53 only).
	DNS []netip.Addr
}

// Instance is a running sandbox as its driver reports it.
type Instance struct {
	ID string
	// Envd is where the sandbox's envd listens, reachable from the host.
	Envd netip.AddrPort
	// Pid is the sandbox's init (or VMM) process on the host.
	Pid     int
	Started time.Time
	// State is the driver's state of the sandbox, for the manager to keep.
	State DriverState
}

// DriverState is a driver's saved state of one sandbox. It is opaque to
// the manager, which keeps it inside its own record of the sandbox and
// hands it back to Recover and Restore. Version is the driver's version
// of Data's layout: a driver reads the states older versions of itself
// wrote, and refuses those it cannot read.
type DriverState struct {
	Version int             `json:"version"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// IsZero reports whether s holds no state (see Runtime.Recover).
func (s DriverState) IsZero() bool { return s.Version == 0 && len(s.Data) == 0 }

// Stats is a sandbox's resource use, as the host sees it: drivers read
// it from cgroup files, /proc and statfs, never by asking the sandbox, so
// that the agent can read it every few seconds (docs/metrics.md).
type Stats struct {
	CPUUsage time.Duration // cumulative CPU time
	// VCPUs is how many CPUs the sandbox may use (its CPU quota, rounded
	// up); 0 when it has no quota.
	VCPUs       int
	MemoryBytes uint64 // in use, page cache included
	MemoryLimit uint64
	// MemoryWorkingSet is MemoryBytes less the page cache the kernel
	// reclaims first (inactive file pages): what E2B reports as memory
	// used. A VM's is MemoryBytes, its guest's cache being inside it.
	MemoryWorkingSet uint64
	// MemoryCache is the page cache among MemoryBytes (file-backed and
	// shared memory); 0 where the host cannot tell (a VM's guest).
	MemoryCache uint64
	Pids        int
	// DiskUsed and DiskTotal are the bytes in use on the sandbox's own
	// disk and the disk's size. A namespace sandbox's are its
	// filesystem's count; a VM's used bytes are those its disk image
	// takes on the host (what its guest wrote, not what it freed since).
	DiskUsed, DiskTotal uint64
	// NetRxBytes and NetTxBytes are the bytes the sandbox's network
	// interface received and sent, counted from when the interface was
	// made (counters that may start again after a restore).
	NetRxBytes, NetTxBytes uint64
}
