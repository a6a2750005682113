package sandboxinit

import (
	"fmt"
	"strconv"
	"syscall"
)

// limitUserCounts sets this user namespace's own caps (ucounts.go)
// through proc, a procfs of ours: /proc/sys/user/ holds the limits of the
// reader's user namespace.
func limitUserCounts(proc int) error {
	for name, v := range map[string]int{
		"sys/user/max_inotify_instances": InotifyInstances,
		"sys/user/max_inotify_watches":   InotifyWatches,
	} {
		fd, err := syscall.Openat(proc, name, syscall.O_WRONLY|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0)
		if err != nil {
			return fmt.Errorf("limit %s: %w", name, err)
		}
		_, err = syscall.Write(fd, []byte(strconv.Itoa(v)))
		syscall.Close(fd)
		if err != nil {
			return fmt.Errorf("limit %s: %w", name, err)
		}
	}
	return nil
}
