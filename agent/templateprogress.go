package agent

import (
	"slices"
	"strings"

	"roost.dev/roost/template"
	"roost.dev/roost/template/content"
)

// TemplateProgress is a tree this host is still making: the pull of a
// control plane's template, or the build of base.
type TemplateProgress struct {
	// Name is the tree's: base, or template.TreeName(Digest).
	Name string
	// Digest is the pulled manifest's; empty for base.
	Digest content.Digest
	// Progress says what it is doing now, e.g. "pulling 120.0 of 288.0
	// MiB (41.2 MiB/s)" or a line of the base build's progress.
	Progress string
}

// TemplatesInProgress lists the trees this host is making now, sorted by
// name: what a create waiting for one waits for.
func (m *Manager) TemplatesInProgress() []TemplateProgress {
	var out []TemplateProgress
	m.pullMu.Lock()
	for d, p := range m.pulls {
		out = append(out, TemplateProgress{Name: template.TreeName(d), Digest: d, Progress: p.meter.String()})
	}
	m.pullMu.Unlock()
	m.baseMu.Lock()
	if b := m.base; b != nil {
		progress := b.progress
		if progress == "" {
			progress = "building with debootstrap"
		}
		out = append(out, TemplateProgress{Name: template.BaseName, Progress: progress})
	}
	m.baseMu.Unlock()
	slices.SortFunc(out, func(a, b TemplateProgress) int { return strings.Compare(a.Name, b.Name) })
	return out
}
