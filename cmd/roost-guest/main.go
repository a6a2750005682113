// Command roost-guest is the init (PID 1) of roost's VM sandboxes. The
// image pipeline puts it in the guest's initramfs and root disk; it is not
// meant to run on a host.
package main

import (
	"fmt"
	"os"

	"roost.dev/roost/guest"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "roost-guest: this is a VM guest's init; it runs as PID 1 only")
		os.Exit(2)
	}
	guest.Main()
}
