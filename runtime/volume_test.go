package runtime

import (
	"errors"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestCheckMountPath(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"/data", "/mnt/vol", "/home/user/data", "/procs", "/device", "/a/b/c"} {
		if err := CheckMountPath(p); err != nil {
			t.Errorf("CheckMountPath(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"", "data", "/", "/proc", "/proc/self", "/sys", "/sys/fs/cgroup", "/dev", "/dev/shm",
		"/a/../b", "/..", "/a/./b", "/a//b", "/a/", "/a\x00b", "/a\nb", "/" + strings.Repeat("a", MaxMountPath)} {
		if err := CheckMountPath(p); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("CheckMountPath(%q) = %v, want errdefs.ErrInvalid", p, err)
		}
	}
}

func FuzzCheckMountPath(f *testing.F) {
	for _, s := range []string{"/data", "/proc/x", "/a/../b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if CheckMountPath(p) != nil {
			return
		}
		// What it accepts is absolute, clean and clear of the kernel's trees.
		if !strings.HasPrefix(p, "/") || p == "/" || strings.Contains(p, "..") && strings.Contains("/"+p+"/", "/../") {
			t.Fatalf("accepted %q", p)
		}
		for _, r := range []string{"/proc", "/sys", "/dev"} {
			if p == r || strings.HasPrefix(p, r+"/") {
				t.Fatalf("accepted %q under %s", p, r)
			}
		}
	})
}
