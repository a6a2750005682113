package wire

import "testing"

// TestFileSignature checks FileSignature against values computed the way
// E2B's SDKs do: "v1_" and the unpadded base64 of the SHA-256 of
// path:operation:user:token[:expiration].
func TestFileSignature(t *testing.T) {
	for _, c := range []struct{ path, op, user, token, exp, want string }{
		{"/home/user/hello.txt", "read", "user", "tok", "", "v1_lKjYGuCNTqV0LUHu8D4rKEq+izEiiGtwOvpngVBsou0"},
		{"/home/user/hello.txt", "write", "", "tok", "1700000000", "v1_HQ2TqrDxPNUoM6isLbg4tFnU8LazsMAA+I0jWuEiqxI"},
	} {
		if got := FileSignature(c.path, c.op, c.user, c.token, c.exp); got != c.want {
			t.Errorf("FileSignature(%q, %q, %q, %q, %q) = %s, want %s", c.path, c.op, c.user, c.token, c.exp, got, c.want)
		}
	}
}
