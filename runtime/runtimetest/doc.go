// Package runtimetest is the conformance suite every runtime driver must
// pass (lifecycle, errors, capabilities that agree with the optional
// interfaces, recovery by a new driver after an agent restart, prune,
// snapshot and restore), and the fixtures it needs: a built envd, the
// cached base template, and a sandbox network. Drivers run it from their
// own tests with the real driver; nothing here is a fake.
package runtimetest
