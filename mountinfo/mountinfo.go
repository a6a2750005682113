// Package mountinfo reads the kernel's mount table, /proc/<pid>/mountinfo
// (proc(5)): roost looks there for its own mounts (to find and clean them up)
// and for the cgroup hierarchies. It only reads; it mounts nothing.
package mountinfo

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of the table, the fields roost uses.
type Mount struct {
	Target string // the mount point
	FSType string
	Source string
	// SuperOptions are the per-superblock options; for cgroup v1 they name
	// the controllers.
	SuperOptions []string
}

// Read returns the mount table of the calling process's mount namespace.
func Read() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads the mountinfo format. A line without the " - " separator or
// with too few fields is an error: the table comes from the kernel, and a
// line that does not parse means the reader is wrong.
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		// id parent major:minor root target options [optional...] - fstype source superopts
		before, after, ok := strings.Cut(line, " - ")
		if !ok {
			return nil, fmt.Errorf("parse mountinfo line %q: no separator", line)
		}
		pre, post := strings.Fields(before), strings.Fields(after)
		if len(pre) < 5 || len(post) < 1 {
			return nil, fmt.Errorf("parse mountinfo line %q: too few fields", line)
		}
		m := Mount{Target: unescape(pre[4]), FSType: post[0]}
		if len(post) >= 2 {
			m.Source = unescape(post[1])
		}
		if len(post) >= 3 {
			m.SuperOptions = strings.Split(post[2], ",")
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return out, nil
}

// unescape undoes the \ooo escapes the kernel writes for spaces, tabs,
// newlines and backslashes.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
