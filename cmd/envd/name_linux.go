package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// setProcessName names the process "envd" in ps and top: a sandbox's init
// executes envd through /proc/1/fd/N, which would otherwise name it "N".
func setProcessName() {
	name := []byte("envd\x00")
	_ = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0)
}
