//go:build !amd64 && !arm64

package sandboxinit

// sysSeccomp is unknown on this architecture: the filter is installed
// with prctl, thread by thread.
const sysSeccomp = -1
