// Package atomicfile writes files so that a reader, or the next process
// after a crash, finds the old content or the new, whole: the state
// records of the agent and the runtime drivers.
package atomicfile

import (
	"os"
)

// Write puts data at path through a synced temporary file beside it,
// renamed over path.
func Write(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err == nil {
		_, err = f.Write(data)
		if err == nil {
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
