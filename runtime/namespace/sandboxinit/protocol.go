package sandboxinit

// ModeEnv selects what the init binary does; the driver always sets it, so
// the binary run by hand refuses to do anything.
const (
	ModeEnv  = "ROOST_NAMESPACE_INIT"
	ModeInit = "init" // a sandbox's PID 1
	ModeHold = "hold" // hold a user namespace open until stdin closes
	// ModeResume is the init executing itself again after a CRIU restore
	// (see SignalReexec), carrying its state in ResumeEnv.
	ModeResume = "resume"
	ResumeEnv  = "ROOST_NAMESPACE_INIT_STATE"
)

// SignalReexec asks a sandbox's init to execute itself again, keeping its
// pid, children and state. The driver sends it after a CRIU restore: a
// restored process's memory belongs to the host's user namespace, which
// would keep host root's CRIU from checking the next hibernation's
// namespaces from inside the sandbox's (the init is not dumpable); an
// exec gives the init memory of the sandbox's user namespace again. Once
// done, the init's command line ends with ResumedArg.
const (
	SignalReexec = 10 // SIGUSR1
	ResumedArg   = "resumed"
)

// File descriptors the driver passes to a sandbox init.
const (
	FDConfig = 3 // the Config, as JSON; EOF releases the init
	FDStatus = 4 // the init writes "ok" or "error: ..." here, then closes it
	FDEnvd   = 5 // the envd binary, executed through /proc
	FDSelf   = 6 // the init binary, which the init is exec'd from
)

// IDsMapped is the first byte the driver writes on FDConfig, once it has
// written the ID maps of the init's user namespace. The init starts
// unmapped, with every capability of its namespace as an ambient one (the
// driver's clone cannot wait for the maps); it waits for this byte, then
// becomes the sandbox's root. The Config follows.
const IDsMapped = '\n' // JSON's whitespace: a decoder of the Config skips it

// Config tells a sandbox init how to set the sandbox up.
type Config struct {
	RootFS   string            `json:"rootfs"` // where the init finds the sandbox's root tree in its mount namespace
	Hostname string            `json:"hostname"`
	Resolv   string            `json:"resolv"` // /etc/resolv.conf contents
	Env      map[string]string `json:"env"`
	EnvdArgs []string          `json:"envdArgs"`
	// EnvdPort, when set, is the TCP port the init listens on (all IPv4
	// addresses) before it starts envd, handing envd the socket with
	// -listen-fd: connections queue from then on, so a client's first
	// health check waits for envd to serve instead of being refused and
	// polling again. The socket outlives an envd restart.
	EnvdPort int `json:"envdPort,omitempty"`
	// Seccomp is the syscall filter the init installs before it starts
	// envd: a classic BPF program, struct sock_filter entries in native
	// byte order (package confine compiles it on the host). The init
	// refuses to start a sandbox without one unless Unconfined is set.
	Seccomp []byte `json:"seccomp,omitempty"`
	// Caps are the capability numbers the sandbox keeps; every other is
	// dropped from all sets of the init, the bounding set included.
	Caps []int `json:"caps,omitempty"`
	// Unconfined starts envd with no syscall filter and every capability
	// of the sandbox's user namespace. Only benchmarks and tests set it,
	// through the driver's Config, to measure what confinement costs.
	Unconfined bool `json:"unconfined,omitempty"`
	// CgroupMounts are the host's cgroupfs mounts (HostCgroupMounts),
	// from which the init builds the sandbox's /sys/fs/cgroup. Nil: the
	// init reads them from its mountinfo, which takes longer the more
	// sandboxes the host runs.
	CgroupMounts []CgroupMount `json:"cgroupMounts,omitempty"`
}

// CgroupMount is one of the host's cgroupfs mounts below /sys/fs/cgroup.
type CgroupMount struct {
	Target string `json:"target"` // where it is mounted
	V2     bool   `json:"v2,omitempty"`
	// Options are the superblock's options; a v1 hierarchy's name its
	// controllers.
	Options []string `json:"options,omitempty"`
}
