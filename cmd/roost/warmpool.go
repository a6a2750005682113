package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"roost.dev/roost/agent"
)

// warmPoolOptions are the flags of a host's warm pools: sandboxes started
// ahead of creates (docs/pools.md).
type warmPoolOptions struct {
	sizes  warmPoolSizes
	memory byteSize
}

// addFlags registers --warm-pool, with def as its default (nil: none),
// and --warm-pool-memory.
func (o *warmPoolOptions) addFlags(cmd *cobra.Command, def map[string]int) {
	o.sizes = maps.Clone(def)
	if o.sizes == nil {
		o.sizes = warmPoolSizes{}
	}
	o.memory = agent.DefaultWarmPoolMemoryMB << 20
	cmd.Flags().Var(&o.sizes, "warm-pool", "keep sandboxes of a template started ahead of creates: TEMPLATE=N keeps at least N of its default shape, more while creates ask for more; repeat or separate with commas; TEMPLATE=0 turns a default off")
	cmd.Flags().Var(&o.memory, "warm-pool-memory", "memory the warm pools' sandboxes may use together (their working set), e.g. 1GiB")
}

// config is the manager's view of the flags: the pools of a size above
// zero, and the budget in MiB.
func (o *warmPoolOptions) config() (map[string]int, int64, error) {
	if o.memory > 0 && o.memory < 1<<20 {
		return nil, 0, fmt.Errorf("--warm-pool-memory %s: want at least 1MiB", o.memory.String())
	}
	pools := map[string]int{}
	for t, n := range o.sizes {
		if n > 0 {
			pools[t] = n
		}
	}
	return pools, int64(o.memory) >> 20, nil
}

// maxWarmPool bounds one pool's configured size.
const maxWarmPool = 1000

// warmPoolSizes is --warm-pool: template names and pool sizes.
type warmPoolSizes map[string]int

func (s *warmPoolSizes) Set(v string) error {
	for item := range strings.SplitSeq(v, ",") {
		name, num, ok := strings.Cut(strings.TrimSpace(item), "=")
		n, err := strconv.Atoi(num)
		switch {
		case !ok || name == "":
			return fmt.Errorf("%q: want TEMPLATE=N", item)
		case err != nil || n < 0 || n > maxWarmPool:
			return fmt.Errorf("%q: the size must be a whole number from 0 to %d", item, maxWarmPool)
		}
		(*s)[name] = n
	}
	return nil
}

func (s *warmPoolSizes) String() string {
	var parts []string
	for _, t := range slices.Sorted(maps.Keys(*s)) {
		parts = append(parts, fmt.Sprintf("%s=%d", t, (*s)[t]))
	}
	return strings.Join(parts, ",")
}

func (s *warmPoolSizes) Type() string { return "TEMPLATE=N" }
