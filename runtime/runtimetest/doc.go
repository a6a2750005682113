// Package runtimetest is the conformance suite every runtime driver must
// pass, and the fixtures it needs: a built envd, the cached base template,
// and a sandbox network. Drivers run it from their own tests with the real
// driver; nothing here is a fake.
package runtimetest
