// Package atomicfile writes files so that a reader, or the next process
// after a crash, finds the old content or the new, whole: the state
// records of the agent and the runtime drivers, and the agent's
// registration (a credential). It is not a lock: two processes writing the
// same path at once share one temporary file and may fail.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write puts data at path through a synced temporary file beside it,
// renamed over path, and then syncs the directory, so that the rename
// itself survives a crash: without that, a power loss after Write returned
// could leave the old file, or none. An error after the rename (syncing
// the directory) means the new content is in place but may not be durable.
func Write(path string, data []byte, perm os.FileMode) error {
	if err := replace(path, data, perm, true); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Replace is Write without the syncs: a reader, or the next process after
// this one crashes, finds the old content or the new, whole, but after a
// crash of the host either may be there, or none. It is for state that a
// crash of the host makes moot (a record of processes that the crash
// ends), where the syncs' milliseconds are better spent.
func Replace(path string, data []byte, perm os.FileMode) error {
	return replace(path, data, perm, false)
}

// replace writes data to a temporary file beside path, synced when sync
// is set, and renames it over path.
func replace(path string, data []byte, perm os.FileMode, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err == nil {
		_, err = f.Write(data)
		if err == nil && sync {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}

// syncDir fsyncs the directory dir; a variable so that a test can see the
// call.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
