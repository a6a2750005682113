package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	fsrpc "roost.dev/roost/gen/filesystem"
	"roost.dev/roost/gen/filesystem/filesystemconnect"
	"roost.dev/roost/store"
)

// maxListDepth bounds a listing's depth, as envd does.
const maxListDepth = 64

// listTimeout bounds a directory listing.
const listTimeout = 30 * time.Second

// entryJSON is one directory entry as GET .../files/list answers it.
type entryJSON struct {
	Name          string    `json:"name"`
	Path          string    `json:"path"`
	Type          string    `json:"type"` // "file", "dir", "symlink"
	Size          int64     `json:"size"`
	Mode          uint32    `json:"mode"`
	Permissions   string    `json:"permissions"`
	Owner         string    `json:"owner"`
	Group         string    `json:"group"`
	ModifiedTime  time.Time `json:"modifiedTime"`
	SymlinkTarget string    `json:"symlinkTarget,omitempty"`
}

// listFiles is GET /v1/sandboxes/{id}/files/list?path=[&depth=][&user=]:
// the entries of a directory, depth levels down (default 1), from envd's
// Filesystem.ListDir.
func (s *Server) listFiles(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	q := r.URL.Query()
	path := q.Get("path")
	if path == "" {
		s.fail(w, r, "list files", fmt.Errorf("query parameter path is required: %w", errdefs.ErrInvalid))
		return
	}
	depth := uint64(1)
	if v := q.Get("depth"); v != "" {
		d, err := strconv.ParseUint(v, 10, 32)
		if err != nil || d < 1 || d > maxListDepth {
			s.fail(w, r, "list files", fmt.Errorf("depth %q: want 1-%d: %w", v, maxListDepth, errdefs.ErrInvalid))
			return
		}
		depth = d
	}
	_, t, err := s.runningSandbox(r, key)
	if err != nil {
		s.fail(w, r, "list files", err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), listTimeout)
	defer cancel()
	fs := filesystemconnect.NewFilesystemClient(s.execClient, t.base, envdClientOptions(maxListMessage)...)
	req := connect.NewRequest(&fsrpc.ListDirRequest{Path: path, Depth: uint32(depth)})
	for k, v := range t.header {
		req.Header()[k] = v
	}
	if u := q.Get("user"); u != "" {
		req.Header().Set("Authorization", basicUser(u))
	}
	resp, err := fs.ListDir(ctx, req)
	if connect.CodeOf(err) == connect.CodeResourceExhausted {
		errdefs.WriteHTTP(w, http.StatusRequestEntityTooLarge, fmt.Sprintf(
			"the listing of %s is larger than %d MiB: list a deeper path or fewer levels (depth), or walk the tree level by level", path, maxListMessage>>20))
		return
	}
	if err != nil {
		s.fail(w, r, "list files", fsError(t.sandboxID, err))
		return
	}
	entries := make([]entryJSON, 0, len(resp.Msg.GetEntries()))
	for _, e := range resp.Msg.GetEntries() {
		entries = append(entries, entryJSON{
			Name: e.GetName(), Path: e.GetPath(), Type: fileType(e.GetType()), Size: e.GetSize(), Mode: e.GetMode(),
			Permissions: e.GetPermissions(), Owner: e.GetOwner(), Group: e.GetGroup(),
			ModifiedTime: e.GetModifiedTime().AsTime(), SymlinkTarget: e.GetSymlinkTarget(),
		})
	}
	writeJSON(w, http.StatusOK, entries)
}

func fileType(t fsrpc.FileType) string {
	switch t {
	case fsrpc.FileType_FILE_TYPE_FILE:
		return "file"
	case fsrpc.FileType_FILE_TYPE_DIRECTORY:
		return "dir"
	case fsrpc.FileType_FILE_TYPE_SYMLINK:
		return "symlink"
	}
	return strings.ToLower(strings.TrimPrefix(t.String(), "FILE_TYPE_"))
}

// fsError maps envd's filesystem refusals: a missing path is 404, a bad
// one or a denied one 400; the rest as agentError does.
func fsError(id string, err error) error {
	switch connect.CodeOf(err) {
	case connect.CodeNotFound:
		return fmt.Errorf("sandbox %s: %s: %w", id, connectMessage(err), errdefs.ErrNotFound)
	case connect.CodeInvalidArgument, connect.CodePermissionDenied, connect.CodeFailedPrecondition:
		return fmt.Errorf("sandbox %s: %s: %w", id, connectMessage(err), errdefs.ErrInvalid)
	}
	return fmt.Errorf("sandbox %s: %w", id, errdefs.FromConnect("envd list", err))
}
