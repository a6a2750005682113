// Command roost-init is the init (PID 1) of namespace sandboxes; the
// namespace driver looks for it next to bin/roost and runs it in each new
// sandbox. It is not meant to be run by hand. See package sandboxinit.
package main

import (
	"runtime"

	"roost.dev/roost/runtime/namespace/sandboxinit"
)

// init wires the main goroutine to the main thread, the thread group's
// leader: the thread the init confines (its capability bounding set is
// per thread) and forks envd from is then the one /proc/1/status shows.
func init() { runtime.LockOSThread() }

func main() { sandboxinit.Main() }
