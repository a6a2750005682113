package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"roost.dev/roost/agent"
)

// prepareBase starts the base template's build when this host has no
// current base, says so on w, and says again when the build ends; it
// returns when the build ends or ctx does. The first `roost sandbox
// create` would otherwise sit silent through the build.
func prepareBase(ctx context.Context, w io.Writer, m *agent.Manager) {
	b, ok := m.PrepareBase()
	if !ok {
		return
	}
	if b.Stale {
		fmt.Fprintln(w, "Rebuilding the base template (Debian bookworm with debootstrap): this roost's base has more in it (such as git).\nAbout 1-2 minutes; sandboxes are created from the old one until it is ready.")
	} else {
		fmt.Fprintln(w, "Building the base template (Debian bookworm with debootstrap), about 1-2 minutes;\nsandboxes can be created once it is ready (a create waits for it).")
	}
	select {
	case err := <-b.Done:
		took := time.Since(b.Started).Round(time.Second)
		if err != nil {
			fmt.Fprintf(w, "Building the base template failed after %s: %v\nThe next create of a base sandbox tries again.\n", took, err)
			return
		}
		fmt.Fprintf(w, "The base template is ready (built in %s): sandboxes can be created.\n", took)
	case <-ctx.Done():
	}
}
