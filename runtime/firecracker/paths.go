package firecracker

import (
	"path/filepath"

	"roost.dev/roost/runtime"
)

// statePaths are the files of one sandbox under its state directory.
type statePaths struct {
	disk, api, console, log, vmstate, memory, memoryDiff string
}

func paths(stateDir string) statePaths {
	j := func(name string) string { return filepath.Join(stateDir, name) }
	return statePaths{
		disk:       j("rootfs.ext4"),
		api:        j("api.sock"),
		console:    j(runtime.LogFile), // the guest's serial console (Firecracker's stdout)
		log:        j("firecracker.log"),
		vmstate:    j("vm.snap"),
		memory:     j("memory.snap"),
		memoryDiff: j("memory.diff"),
	}
}

// files are what Destroy removes (the manager removes the directory).
func (p statePaths) files() []string {
	return []string{p.disk, p.api, p.vmstate, p.memory, p.memoryDiff}
}
