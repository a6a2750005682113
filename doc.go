// Package roost is a self-hostable sandbox platform: isolated Linux machines
// on demand, served over E2B's wire protocol. The root package holds only
// repository-wide tests (see deps_test.go); the code lives in the packages
// below it. See README.md and shared/DESIGN.md.
package roost
