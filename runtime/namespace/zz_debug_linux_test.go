package namespace_test

import (
	"testing"

	"roost.dev/roost/runtime/namespace"
)

func TestZZDebugRestoredBootID(t *testing.T) {
	bothConfinements(t, func(t *testing.T, d *namespace.Driver) {
		sb := startRestored(t, d)
		const f = "/proc/sys/kernel/random/boot_id"
		t.Log(sb.MustExec(t, "cat "+f+"; "+inPrivateMounts(`umount -l `+f+` 2>/dev/null && echo "detached it"; echo x > `+f+` 2>/dev/null && echo wrote; cat `+f)))
	})
}
