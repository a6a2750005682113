package sandboxinit

// StatusProc starts the line the init writes on FDStatus before it reads
// its Config: "proc N" says its descriptor N is a procfs of the sandbox's
// pid namespace that is mounted nowhere yet. The driver takes it
// (pidfd_getfd), attaches it below the sandbox's root in the host's mount
// namespace with the masks over it, and only then sends the Config: mounts
// made there reach the init's mount namespace locked (MNT_LOCKED), so that
// the sandbox's root can neither unmount a mask nor the procfs.
const StatusProc = "proc"
