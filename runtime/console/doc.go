// Package console keeps a sandbox's console log on the host within a fixed
// size, whatever the sandbox writes to it.
//
// A sandbox's console (a namespace sandbox's init and envd output, a VM's
// serial port) is written by processes the sandbox controls: a guest's root
// can write to it as fast and as long as it likes. So the sandbox's process
// never gets the log file itself, only the write end of a pipe; the agent
// drains the pipe into a ring of two files (runtime.LogFile and
// runtime.LogFile+".1"), each at most half of runtime.LogMaxBytes, and
// writes at most a sustained rate to them, dropping the excess with a note
// saying how much was dropped.
//
// The drain outlives no sandbox: it ends when every write end is closed,
// that is when the sandbox's processes are gone. An agent that restarts
// adopts the pipe again through /proc/PID/fd of the process holding its
// write end (Attach); while no agent runs, the pipe has no reader and the
// sandbox's writes fail with EPIPE, so nothing piles up.
//
// It does not parse the log (the agent does) or decide where the log
// lives (the drivers do, in the sandbox's state directory).
package console
