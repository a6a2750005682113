package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"roost.dev/roost/agent"
	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// templateCacheOptions are the flags of the host's cache of the control
// plane's templates.
type templateCacheOptions struct {
	budget byteSize
}

func (o *templateCacheOptions) addFlags(cmd *cobra.Command) {
	o.budget = agent.DefaultTemplateCache
	cmd.Flags().Var(&o.budget, "template-cache", "disk budget of the templates this host pulled from the control plane (their layers and trees), e.g. 20GiB or 500MB; the least recently used go first, never one a sandbox uses")
}

// blobsDir is where a data directory keeps template content: the control
// plane's store and the agent's cache, one directory in roost up.
func blobsDir(dataDir string) string { return filepath.Join(dataDir, "blobs") }

// newBlobs is the content store of a data directory.
func newBlobs(dataDir string) *content.Blobs { return content.NewBlobs(blobsDir(dataDir)) }

// byteSize is a size flag: a number of bytes with an optional unit (B,
// K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB; all powers of 1024, as disks
// are counted by du).
type byteSize int64

var sizeUnits = []struct {
	suffixes []string
	shift    uint
}{
	{[]string{"TIB", "TB", "T"}, 40},
	{[]string{"GIB", "GB", "G"}, 30},
	{[]string{"MIB", "MB", "M"}, 20},
	{[]string{"KIB", "KB", "K"}, 10},
	{[]string{"B"}, 0},
}

func (s *byteSize) Set(v string) error {
	n, err := parseByteSize(v)
	if err != nil {
		return err
	}
	*s = byteSize(n)
	return nil
}

func (s *byteSize) String() string {
	for _, u := range sizeUnits {
		if u.shift > 0 && *s > 0 && int64(*s)%(1<<u.shift) == 0 {
			return strconv.FormatInt(int64(*s)>>u.shift, 10) + u.suffixes[0][:1] + "iB"
		}
	}
	return strconv.FormatInt(int64(*s), 10) + "B"
}

func (s *byteSize) Type() string { return "size" }

func parseByteSize(v string) (int64, error) {
	num, shift := splitUnit(strings.ToUpper(strings.TrimSpace(v)))
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)>>shift {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit, such as 20GiB or 500MB: %w", v, errdefs.ErrInvalid)
	}
	return n << shift, nil
}

// splitUnit splits a size's number from its unit's shift.
func splitUnit(s string) (string, uint) {
	for _, u := range sizeUnits {
		for _, suf := range u.suffixes {
			if rest, ok := strings.CutSuffix(s, suf); ok {
				return strings.TrimSpace(rest), u.shift
			}
		}
	}
	return s, 0
}
