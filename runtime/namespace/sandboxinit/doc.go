// Package sandboxinit is the init (PID 1) of namespace sandboxes and the
// small protocol between it and the namespace driver: the file descriptors
// and configuration the driver hands over and the status line it reads
// back. cmd/roost-init is its binary.
//
// It runs inside sandboxes, so it imports nothing of roost's host side and
// nothing beyond the standard library, and it is kept small on purpose:
// every sandbox start executes it, and a Go program's start-up time grows
// with what it links and initialises. The driver (package namespace)
// creates the namespaces, the overlay and the cgroup; this package only
// builds the sandbox's view from the inside, starts envd, restarts it when
// it dies and reaps orphans.
package sandboxinit
