package controlplane

// SetOperationsLog turns the audit log and lifecycle events on or off:
// the benchmarks measure what they cost against the same server without
// them.
func SetOperationsLog(s *Server, on bool) {
	s.audit.off.Store(!on)
	s.events.off.Store(!on)
}
