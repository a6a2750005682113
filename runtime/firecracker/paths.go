package firecracker

import (
	"path/filepath"

	"roost.dev/roost/runtime"
)

// jailDir is the jail's root as the agent reaches it: a link in the state
// directory to the jailer's layout (see jail_linux.go).
func jailDir(stateDir string) string { return filepath.Join(stateDir, "jail") }

// jailerRoot is where the jailer puts the root of sandbox id's jail.
func jailerRoot(stateDir, id string) string {
	return filepath.Join(stateDir, "firecracker", id, "root")
}

// inJail is the path Firecracker sees for hostPath, a file in the jail.
func inJail(hostPath string) string { return "/" + filepath.Base(hostPath) }

// statePaths are the files of one sandbox under its state directory.
type statePaths struct {
	disk, api, console, log, vmstate, memory, memoryDiff string
	// The state and memory a capture has Firecracker write, before they
	// are copied out of the jail.
	captureState, captureMemory string
	// mmds is the guest's MMDS contents, for Restore to put back (a
	// snapshot does not hold them): root's, outside the jail.
	mmds string
}

// paths are the files of the sandbox whose state directory is stateDir:
// Firecracker's in its jail (see jail_linux.go), the console beside it.
func paths(stateDir string) statePaths {
	jd := jailDir(stateDir)
	j := func(name string) string { return filepath.Join(jd, name) }
	return statePaths{
		disk:       j("rootfs.ext4"),
		api:        j("api.sock"),
		console:    filepath.Join(stateDir, runtime.LogFile), // the guest's serial console (Firecracker's stdout)
		log:        j("firecracker.log"),
		vmstate:    j("vm.snap"),
		memory:     j("memory.snap"),
		memoryDiff: j("memory.diff"),

		captureState:  j("capture.snap"),
		captureMemory: j("capture.mem"),
		mmds:          filepath.Join(stateDir, "mmds.json"),
	}
}

// files are what Destroy removes (the manager removes the directory).
func (p statePaths) files() []string {
	jd := filepath.Dir(p.api)
	return []string{p.disk, p.api, p.vmstate, p.memory, p.memoryDiff, p.log, p.captureState, p.captureMemory, p.mmds,
		filepath.Join(jd, "vmlinux"), filepath.Join(jd, "initrd"), filepath.Join(jd, "firecracker"),
		filepath.Join(jd, "dev", "kvm"), filepath.Join(jd, "dev", "net", "tun"), filepath.Join(jd, "dev", "net"), filepath.Join(jd, "dev")}
}
