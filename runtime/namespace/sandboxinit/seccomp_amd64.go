package sandboxinit

// sysSeccomp is seccomp(2), which package syscall does not name here.
const sysSeccomp = 317
