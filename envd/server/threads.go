package server

import (
	"runtime"
	"sync"
)

// reserveThreads makes the Go runtime create n OS threads now and keep them
// idle. In a sandbox whose pids limit a user's fork bomb exhausts, the
// runtime could not create a thread later and would abort envd; with a pool
// it reuses the idle ones. Threads of goroutines that unlock before ending
// return to the pool instead of exiting.
func reserveThreads(n int) {
	var locked, release sync.WaitGroup
	locked.Add(n)
	release.Add(1)
	var done sync.WaitGroup
	for range n {
		done.Go(func() {
			runtime.LockOSThread()
			locked.Done()
			release.Wait() // holds this thread while the others are made
			runtime.UnlockOSThread()
		})
	}
	locked.Wait()
	release.Done()
	done.Wait()
}
