// Package process implements the process.Process Connect service: it starts
// commands with pipes or a pseudo-terminal, streams their output, takes their
// input and signals, and lets clients reattach by pid or tag.
//
// Output is never dropped while a client is attached: each attached stream
// has a bounded queue and a full queue blocks the reader of the process's
// output, so a slow client back-pressures the process. A PTY also keeps a
// scrollback ring that a reattaching client receives first. A finished
// process's end event stays available for Retention.
//
// It does not decide which user a request runs as (auth does) and does not
// reap processes it did not start.
package process
