package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/mountinfo"
	"roost.dev/roost/proxy"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"roost.dev/roost/network"
	"roost.dev/roost/runtime"
	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

// Config configures a Manager.
type Config struct {
	// DataDir is roost's data directory; sandboxes live under
	// <DataDir>/sandboxes. Required.
	DataDir string
	// Envd is the envd binary injected into every sandbox. Required.
	Envd string
	// Version is roost's version, as host info reports it.
	Version string
	// EnvdTimeout bounds the wait for a new sandbox's envd to answer
	// /health; default 30 s.
	EnvdTimeout time.Duration
	// ReapInterval is how often the reaper looks for sandboxes past their
	// end; default 1 s.
	ReapInterval time.Duration
	// MetricsInterval is how often every running sandbox's use is sampled
	// into its metrics history (history.go); default 5 s.
	MetricsInterval time.Duration
	// Now is the clock; default time.Now. Tests at the edge replace it.
	Now func() time.Time
	// SkipPrune skips the start-up sweep of roost objects (network
	// namespaces, links, firewall elements, mounts, cgroups) that belong to
	// no sandbox of this agent. The sweep is host-wide, so set SkipPrune
	// when something else on the host makes such objects too: another
	// agent with its own data dir, or tests running in parallel.
	SkipPrune bool

	// Blobs is the host's content store of templates (<data>/blobs):
	// the layers of the control plane's templates it pulled, and those its
	// builds made. Nil: creates with a TemplateRef and builds fail
	// unavailable.
	Blobs *content.Blobs
	// SharedBlobs says Blobs is the control plane's own store (roost up):
	// nothing is fetched or pushed, and no blob is evicted.
	SharedBlobs bool
	// BlobSource is where missing blobs are fetched from: the control
	// plane's GET /v1/hosts/{id}/blobs. Nil: only blobs already in Blobs
	// are used.
	BlobSource content.Source
	// BlobPush is where a build's blobs go: the control plane's blob
	// route of this host (PUT {BlobPush.URL}/{digest}, HEAD first), with
	// BlobPush.Header on every request. Zero: nothing is pushed.
	BlobPush BlobPush
	// BuildRuntime is the runtime of build sandboxes when the host's is
	// not the namespace runtime (whose writable layer builds read): a
	// namespace driver, if this host can run one. Nil: the host's
	// runtime, if it can; else builds fail unavailable.
	BuildRuntime runtime.Runtime
	// TemplateCache is the disk budget, in bytes, of the trees and blobs
	// of control-plane templates this host keeps; default
	// DefaultTemplateCache. Blobs take at most half of it.
	TemplateCache int64
	// VolumeDir holds the volumes' images (docs/persistence.md); default
	// <DataDir>/volumes. It may be shared storage (NFS).
	VolumeDir string
	// Registerer receives the agent's metrics (docs/prometheus.md); nil
	// registers them nowhere. New fails when it has them already.
	Registerer prometheus.Registerer
	// WarmPools names the templates whose sandboxes are kept started
	// ahead of creates (pool.go), with how many each keeps at least for
	// the default shape; demand grows a pool beyond it. Nil: no pools.
	WarmPools map[string]int
	// WarmPoolMemoryMB bounds the memory the warm sandboxes use
	// together; default DefaultWarmPoolMemoryMB.
	WarmPoolMemoryMB int64
}

// Timeouts for operations that must finish once begun, whatever happens to
// the request that started them.
const (
	cleanupTimeout = 60 * time.Second
	opTimeout      = 60 * time.Second
	recoverHealth  = 2 * time.Second
)

// Manager owns the sandboxes of one host. Its methods are safe for
// concurrent use: calls for one sandbox are serialised, calls for
// different sandboxes run in parallel. Sandboxes outlive the Manager: Close
// stops its background work and leaves them running for the next agent.
type Manager struct {
	cfg       Config
	rt        runtime.Runtime
	net       *network.Manager
	templates *template.Store
	log       *slog.Logger
	host      hostLimits
	started   time.Time
	envdVer   string
	envd      *envdClient
	sampler   *sampler // the metrics history (history.go)

	ctx    context.Context // the manager's lifetime; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the reaper and template builds

	mu        sync.Mutex // guards sandboxes and builds
	sandboxes map[string]*sandbox
	builds    map[string]*sandbox // the build sandboxes running now

	baseMu sync.Mutex // guards base
	base   *baseBuild // the base template build in flight, if any

	treeLayerMu sync.Mutex // serialises making layers of host trees for builds

	remote atomic.Pointer[blobRemote] // set by UseControlPlane; nil: Config's

	pullMu sync.Mutex               // guards pulls
	pulls  map[content.Digest]*pull // template pulls in flight, by manifest digest

	captureMu     sync.Mutex           // guards capturing, captureFailed and envdDigest
	capturing     map[string]bool      // the keys of template captures being made
	captureFailed map[string]time.Time // when captures last failed, by key
	envdDigest    string               // the envd binary's sha256, once read

	vols *volumes // the host's volumes (volume.go)

	pools *pools // the warm pools (pool.go); nil without any

	// The background teardowns of StartDestroy (lifecycle.go): a token in
	// pendingTeardowns for each under way, in runningTeardowns for each
	// running.
	pendingTeardowns, runningTeardowns chan struct{}

	metrics *metrics // prometheus.go
}

// sandbox is one sandbox the manager knows.
type sandbox struct {
	dir string // its state directory

	// op serialises operations that change the sandbox (create, destroy,
	// pause, resume, set timeout); held for the whole operation.
	op sync.Mutex

	mu     sync.Mutex // guards rec and cancel
	rec    record
	cancel context.CancelFunc // cancels an in-flight create; nil otherwise
	// rt is the runtime a build sandbox runs on; nil: the manager's.
	rt runtime.Runtime
}

// runtimeOf is the runtime sandbox sb runs on.
func (m *Manager) runtimeOf(sb *sandbox) runtime.Runtime {
	if sb.rt != nil {
		return sb.rt
	}
	return m.rt
}

func (sb *sandbox) snapshot() record {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return sb.rec.clone()
}

// update changes the in-memory record under its lock and persists it.
// Callers hold sb.op, which orders the writes.
func (sb *sandbox) update(change func(*record)) error {
	sb.mu.Lock()
	change(&sb.rec)
	rec := sb.rec.clone()
	sb.mu.Unlock()
	return writeRecord(sb.dir, rec)
}

// setStateLocked moves the sandbox to state to (callers hold sb.op) and
// persists it. An illegal transition wraps errdefs.ErrConflict.
func (sb *sandbox) setStateLocked(to State, now time.Time, msg string) error {
	sb.mu.Lock()
	from := sb.rec.State
	sb.mu.Unlock()
	if err := checkTransition(from, to); err != nil {
		return err
	}
	return sb.update(func(r *record) {
		r.State, r.StateChanged, r.Error = to, now, msg
	})
}

// New starts a Manager: it re-adopts the sandboxes a previous agent left
// on this host, cleans up what a crash left half-made, and starts the
// reaper. ctx bounds only the start-up work.
func New(ctx context.Context, cfg Config, rt runtime.Runtime, nw *network.Manager, templates *template.Store, log *slog.Logger) (*Manager, error) {
	if cfg.DataDir == "" || cfg.Envd == "" {
		return nil, fmt.Errorf("agent: data dir and envd are required: %w", errdefs.ErrInvalid)
	}
	if cfg.EnvdTimeout == 0 {
		cfg.EnvdTimeout = 30 * time.Second
	}
	if cfg.ReapInterval == 0 {
		cfg.ReapInterval = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "sandboxes"), 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	host, err := probeHost()
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &Manager{
		cfg: cfg, rt: rt, net: nw, templates: templates, log: log, host: host,
		started: cfg.Now(), envd: newEnvdClient(), ctx: mctx, cancel: cancel,
		sandboxes: map[string]*sandbox{}, builds: map[string]*sandbox{}, pulls: map[content.Digest]*pull{},
		capturing: map[string]bool{}, captureFailed: map[string]time.Time{},
		vols: newVolumes(cfg.DataDir, cfg.VolumeDir, log), metrics: newMetrics(),
		pendingTeardowns: make(chan struct{}, maxPendingTeardowns), runningTeardowns: make(chan struct{}, maxTeardowns),
	}
	if cfg.Registerer != nil {
		if err := m.metrics.register(cfg.Registerer, m); err != nil {
			cancel()
			return nil, err
		}
	}
	m.envdVer = envdVersion(ctx, cfg.Envd)
	if err := m.recover(ctx); err != nil {
		cancel()
		return nil, err
	}
	m.sweepCaptures()
	// Forks end with the agent that made them: their captures go.
	if err := os.RemoveAll(m.forksDir()); err != nil {
		log.Warn("captures of forks left behind", "dir", m.forksDir(), "err", err)
	}
	if err := os.RemoveAll(m.movesDir()); err != nil {
		log.Warn("moves' exports left behind", "dir", m.movesDir(), "err", err)
	}
	m.wg.Go(m.reapLoop)
	if len(cfg.WarmPools) > 0 {
		m.pools = newPools(m, cfg.WarmPools, cfg.WarmPoolMemoryMB)
		m.wg.Go(m.pools.fillLoop)
	}
	if err := m.startSampler(); err != nil {
		m.Close()
		return nil, err
	}
	log.Info("agent manager started", "runtime", rt.Name(), "sandboxes", len(m.sandboxes), "data_dir", cfg.DataDir)
	return m, nil
}

// Close stops the reaper and any template build and waits for them, and
// for the teardowns of destroyed sandboxes. It leaves every other sandbox
// running, but for the warm pools', which it destroys.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
	m.envd.close()
}

func (m *Manager) sandboxDir(id string) string {
	return filepath.Join(m.cfg.DataDir, "sandboxes", id)
}

func (m *Manager) lookup(id string) (*sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	sb, ok := m.sandboxes[id]
	if !ok {
		return nil, fmt.Errorf("sandbox %s: %w", id, errdefs.ErrNotFound)
	}
	return sb, nil
}

// Sandbox is a sandbox as the manager reports it.
type Sandbox struct {
	ID        string
	Template  string
	State     State
	Error     string
	Limits    runtime.Limits
	Metadata  map[string]string
	Internet  bool
	AutoPause bool
	// Hibernated: paused, with its memory on disk and no process.
	Hibernated bool
	// Halted: paused without its memory; resume boots it afresh.
	Halted bool
	// PauseNote: why a paused sandbox was frozen, not hibernated.
	PauseNote string
	Timeout   time.Duration
	Started   time.Time
	EndAt     time.Time
	// Envd is where the sandbox's envd listens, reachable from this host.
	Envd netip.AddrPort
}

func (r record) view() Sandbox {
	return Sandbox{
		ID: r.ID, Template: r.Template, State: r.State, Error: r.Error,
		Limits: r.Spec.Limits, Metadata: maps.Clone(r.Metadata), Internet: r.Internet,
		AutoPause: r.AutoPause, Hibernated: r.Hibernated, Halted: r.Halted, PauseNote: r.PauseNote, Timeout: r.timeout(), Started: r.Started, EndAt: r.EndAt, Envd: r.Envd,
	}
}

// Get returns one sandbox, or an error wrapping errdefs.ErrNotFound.
func (m *Manager) Get(id string) (Sandbox, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return Sandbox{}, err
	}
	return sb.snapshot().view(), nil
}

// List returns the sandboxes in any of states (all when none are given),
// ordered by start time.
func (m *Manager) List(states ...State) []Sandbox {
	m.mu.Lock()
	all := slices.Collect(maps.Values(m.sandboxes))
	m.mu.Unlock()
	out := make([]Sandbox, 0, len(all))
	for _, sb := range all {
		v := sb.snapshot().view()
		if len(states) == 0 || slices.Contains(states, v.State) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b Sandbox) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// proxyTarget returns the address of a running sandbox for the proxy.
// SandboxAddr is where a running sandbox's ports answer from this host.
// A paused sandbox wraps ErrPaused (errdefs.ErrConflict), an unknown one
// errdefs.ErrNotFound, one starting or stopping errdefs.ErrUnavailable.
// It is a map lookup: a control plane in the same process asks it on
// every request it sends to the sandbox directly.
func (m *Manager) SandboxAddr(id string) (proxy.Instance, error) { return m.proxyTarget(id) }

// proxyTarget is the current run of a running sandbox: its address, and
// its ID with the pid of its init or VMM, which changes when it is booted
// afresh or restored, so connections of an earlier run are never reused.
func (m *Manager) proxyTarget(id string) (proxy.Instance, error) {
	sb, err := m.lookup(id)
	if err != nil {
		return proxy.Instance{}, err
	}
	sb.mu.Lock()
	state, addr, pid := sb.rec.State, sb.rec.Envd.Addr(), sb.rec.Pid
	sb.mu.Unlock()
	switch state {
	case StateRunning:
		return proxy.Instance{Addr: addr, Key: proxy.InstanceKey(id, pid)}, nil
	case StatePaused:
		return proxy.Instance{}, fmt.Errorf("sandbox %s: %w", id, ErrPaused)
	default:
		return proxy.Instance{}, fmt.Errorf("sandbox %s is %s: %w", id, state, errdefs.ErrUnavailable)
	}
}

// HostInfo describes the host and what its sandboxes use.
type HostInfo struct {
	Hostname     string
	Runtime      string
	Capabilities runtime.Capabilities
	Probe        runtime.Availability
	CPUs         int
	MemoryMB     int64
	// MaxSandboxes is how many sandboxes the host can run at once.
	MaxSandboxes int
	Usage        Usage
	Version      string
	EnvdVersion  string
	Kernel       string
	Started      time.Time
	// VolumeDirID is the volume directory's ID, shared by the hosts that
	// share the directory; "" when it could not be read (volumedir.go).
	VolumeDirID string
}

// Usage sums the sandboxes of a host.
type Usage struct {
	Sandboxes, Running, Paused int
	VCPUs                      int
	MemoryMB, DiskMB           int64
}

// HostInfo reports the host. ctx bounds the runtime's probe.
func (m *Manager) HostInfo(ctx context.Context) HostInfo {
	hostname, _ := os.Hostname()
	var u Usage
	for _, s := range m.List() {
		u.Sandboxes++
		switch s.State {
		case StateRunning:
			u.Running++
		case StatePaused:
			u.Paused++
		}
		u.VCPUs += s.Limits.VCPUs
		u.MemoryMB += int64(s.Limits.MemoryMB)
		u.DiskMB += int64(s.Limits.DiskMB)
	}
	return HostInfo{
		Hostname: hostname, Runtime: m.rt.Name(), Capabilities: m.rt.Capabilities(), Probe: m.rt.Probe(ctx),
		CPUs: m.host.CPUs, MemoryMB: m.host.MemoryMB, MaxSandboxes: m.net.Capacity(), Usage: u,
		Version: m.cfg.Version, EnvdVersion: m.envdVer, Kernel: kernelRelease(), Started: m.started,
		VolumeDirID: m.volumeDirID(),
	}
}

// Templates lists the host's templates.
func (m *Manager) Templates() ([]template.Template, error) {
	return m.templates.List()
}

// DefaultLimits are what a sandbox gets when its create names no limits.
func (m *Manager) DefaultLimits() runtime.Limits {
	req, err := CreateRequest{}.normalize(m.host)
	if err != nil { // an empty request always normalizes
		return runtime.Limits{}
	}
	return req.Limits
}

// EnvdVersion is the version of the envd this host puts in sandboxes;
// empty when it could not be read.
func (m *Manager) EnvdVersion() string { return m.envdVer }

func probeHost() (hostLimits, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return hostLimits{}, fmt.Errorf("sysinfo: %w", err)
	}
	return hostLimits{
		CPUs:     goruntime.NumCPU(),
		MemoryMB: int64(si.Totalram) * int64(si.Unit) >> 20,
	}, nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

// removeStateDir deletes a sandbox's directory, unless something is still
// mounted below it: deleting through a live mount would destroy whatever
// the mount shows, so that is left for a human (or the runtime's Prune).
func removeStateDir(dir string) error {
	mounted, err := mountBelow(dir)
	if err != nil {
		return err
	}
	if mounted != "" {
		return fmt.Errorf("remove %s: still mounted: %s", dir, mounted)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove state dir: %w", err)
	}
	return nil
}

// mountBelow returns a mount point at or below dir in this mount
// namespace, "" when there is none. It asks each directory below dir
// whether it is the root of a mount (statx), so its cost is the size of
// dir, not the number of the host's mounts (two or more per sandbox);
// a kernel that cannot say (before 5.8) has the mount table read.
func mountBelow(dir string) (string, error) {
	var found string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, 0, &st); err != nil {
			return fmt.Errorf("statx %s: %w", path, err)
		}
		if st.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
			return errNoMountRoot
		}
		if st.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
			found = path
			return filepath.SkipAll
		}
		return nil
	})
	if errors.Is(err, errNoMountRoot) {
		return mountedBelowByTable(dir)
	}
	return found, err
}

// errNoMountRoot says the kernel's statx does not tell mount roots.
var errNoMountRoot = errors.New("statx without STATX_ATTR_MOUNT_ROOT")

// mountedBelowByTable is mountBelow from the mount table.
func mountedBelowByTable(dir string) (string, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return "", err
	}
	dir = filepath.Clean(dir)
	for _, m := range mounts {
		if m.Target == dir || strings.HasPrefix(m.Target, dir+"/") {
			return m.Target, nil
		}
	}
	return "", nil
}

// errGone reports whether err says the runtime no longer has the sandbox.
func errGone(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }

// snapshotter is the runtime as a Snapshotter, or an error wrapping
// errdefs.ErrUnsupported. It and pauser are the manager's one way of
// asking what its runtime can do (its Capabilities say the same).
func (m *Manager) snapshotter() (runtime.Snapshotter, error) {
	s, ok := m.rt.(runtime.Snapshotter)
	if !ok {
		return nil, fmt.Errorf("%s runtime cannot snapshot a sandbox: %w", m.rt.Name(), errdefs.ErrUnsupported)
	}
	return s, nil
}

// pauser is the runtime as a Pauser, or an error wrapping
// errdefs.ErrUnsupported.
func (m *Manager) pauser() (runtime.Pauser, error) {
	p, ok := m.rt.(runtime.Pauser)
	if !ok {
		return nil, fmt.Errorf("%s runtime cannot pause: %w", m.rt.Name(), errdefs.ErrUnsupported)
	}
	return p, nil
}
