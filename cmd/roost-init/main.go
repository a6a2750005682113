// Command roost-init is the init (PID 1) of namespace sandboxes; the
// namespace driver looks for it next to bin/roost and runs it in each new
// sandbox. It is not meant to be run by hand. See package sandboxinit.
package main

import "roost.dev/roost/runtime/namespace/sandboxinit"

func main() { sandboxinit.Main() }
