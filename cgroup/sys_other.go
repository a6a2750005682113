//go:build !linux

package cgroup

// isCgroup2 is Linux-only; elsewhere there is no cgroup2 mount.
func isCgroup2(string) (bool, error) { return false, nil }

// writable is Linux-only; elsewhere nothing is.
func writable(string) bool { return false }
