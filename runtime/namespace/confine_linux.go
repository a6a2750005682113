package namespace

import (
	"fmt"

	"roost.dev/roost/runtime/namespace/confine"
	"roost.dev/roost/runtime/namespace/sandboxinit"
)

// confinement puts the syscall filter and the capabilities the sandbox
// keeps into the init's config (package confine decides both), unless the
// driver is configured to leave sandboxes unconfined.
func (d *Driver) confinement(cfg *sandboxinit.Config) error {
	if d.cfg.Unconfined {
		cfg.Unconfined = true
		return nil
	}
	filter, err := confine.Filter()
	if err != nil {
		return fmt.Errorf("sandbox confinement: %w", err)
	}
	cfg.Seccomp = filter
	cfg.Caps = confine.CapabilityNumbers()
	return nil
}
