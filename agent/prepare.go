package agent

import (
	"time"

	"roost.dev/roost/template"
)

// BaseBuild is a build of the base template that PrepareBase started.
type BaseBuild struct {
	// Stale says the host had a base of an older recipe, which creates
	// keep using until the new one is complete.
	Stale bool
	// Done receives the build's result when it ends (nothing if the
	// manager closes first).
	Done <-chan error
	// Started is when the build started.
	Started time.Time
}

// PrepareBase starts building the base template in the background when
// the host has none, or one of an older recipe, so that the first create
// finds it ready; creates that come meanwhile wait for this same build.
// ok is false when the host's base is current: there is nothing to do.
func (m *Manager) PrepareBase() (b BaseBuild, ok bool) {
	t, err := m.templates.Get(template.BaseName)
	if err == nil && template.IsCurrentBase(t) {
		return BaseBuild{}, false
	}
	done := make(chan error, 1)
	b = BaseBuild{Stale: err == nil, Done: done, Started: time.Now()}
	m.wg.Go(func() {
		_, err := m.ensureBase(m.ctx)
		if m.ctx.Err() == nil {
			done <- err
		}
	})
	return b, true
}
