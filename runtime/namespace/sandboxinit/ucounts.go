package sandboxinit

// Per-user limits on inotify, in a sandbox's user namespace. Linux counts
// inotify instances and watches per user at every level of the user
// namespace chain, and charges a sandbox's to host root at the host's
// level (host root made the sandbox's user namespace): with the host's
// default of 128 instances, one sandbox holding them all starved every
// other sandbox and the host's own root services. So the driver lifts
// host root's limits out of reach (their memory is charged to each
// sandbox's cgroup, which is the real bound), and the init sets these,
// Debian's defaults, for each user inside the sandbox before anything of
// the user's runs; the confinement then takes CAP_SYS_RESOURCE, which
// raising them needs.
const (
	// InotifyInstances caps each sandbox user's inotify instances.
	InotifyInstances = 128
	// InotifyWatches caps each sandbox user's inotify watches.
	InotifyWatches = 65536
)
