// Package filesystem serves the filesystem.Filesystem Connect service of
// envd: Stat, ListDir, MakeDir, Move and Remove on paths inside the sandbox,
// the WatchDir event stream, and polling watchers (CreateWatcher,
// GetWatcherEvents, RemoveWatcher), wire-compatible with E2B's envd.
//
// Paths are resolved with identity.User.Resolve against the requesting user
// (auth.Guard.ConnectUser): relative paths and "~" name the user's home. Like
// E2B's envd, the operations run with envd's own privileges (usually root)
// and directories envd creates for a user are chowned to that user; the
// package does not confine paths or enforce per-user permissions.
//
// Entries follow E2B's conventions: a symlink is described by Lstat (name,
// size, permissions string "L...", modified time) but reports the type and
// permission bits of its resolved target, with symlink_target set to the
// fully resolved path. A dangling or cyclic link reports FILE_TYPE_SYMLINK
// and its literal target. EntryInfo.metadata holds the file's user.e2b.<key>
// extended attributes; ReadMetadata, WriteMetadata and ValidateMetadata own
// that format, and package files uses them to store upload metadata.
//
// Watching is built on fsnotify (inotify on Linux). Recursive watches add a
// watch per directory, including directories created later; the contents of
// a directory that appears inside a recursive watch are reported as CREATE
// events, which may duplicate an event inotify also delivers. Events are
// queued in a bounded buffer; a client that falls behind gets
// resource_exhausted instead of a silent gap. GetWatcherEvents includes
// every change made before it was called: the watch first waits for the
// event of a write to a marker (an unlinked temporary file the same inotify
// instance watches), which the kernel queues behind the events already
// pending. Names starting
// with TempFilePrefix (the temporary files of uploads that replace a file) are
// never reported, so an upload shows only under its destination's name; the
// rename that puts one over an existing file is reported as a WRITE of that
// file, the event E2B's envd gives for its in-place rewrite and the one the
// SDKs wait for.
//
// Remove succeeds when the path does not exist, as E2B's envd does.
//
// It does not serve file contents (the /files endpoints do), decide who the
// requesting user is (auth does), or register itself on an HTTP mux (the
// server package does).
package filesystem
