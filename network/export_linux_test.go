package network

import "testing"

// What the attack tests of package network_test (which start real
// sandboxes, and so cannot live in this package) borrow from its tests.

// Outside is outside, exported.
type Outside = outside

// NewOutside is newOutside: a test namespace playing the internet.
func NewOutside(t testing.TB) Outside { return newOutside(t) }

// Addr, HostAddr and NS describe an Outside.
func (o outside) Addr() string     { return o.addr.String() }
func (o outside) HostAddr() string { return o.hostAddr.String() }
func (o outside) NS() string       { return o.ns }

// InNetns is inNetns.
func InNetns(path string, fn func() error) error { return inNetns(path, fn) }

// CreateNetns creates a bare network namespace at path with lo up; the
// returned fd is open inside it for creating links there.
func CreateNetns(path string) (fd int, closeFn func(), err error) {
	n, err := createNetns(path)
	if err != nil {
		return -1, nil, err
	}
	return n.fd, n.close, nil
}

// RemoveNetns is removeNetns.
func RemoveNetns(path string) error { return removeNetns(path) }

// RandHex is randHex.
func RandHex(n int) string { return randHex(n) }
