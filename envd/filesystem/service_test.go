package filesystem

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	"roost.dev/roost/envd/auth"
	"roost.dev/roost/envd/defaults"
	rpc "roost.dev/roost/gen/filesystem"
	"roost.dev/roost/gen/filesystem/filesystemconnect"
)

// env is one Service behind a real HTTP server, with two clients: binary
// protobuf over h2c, and JSON over HTTP/1.1 (what the JS SDK speaks).
type env struct {
	svc     *Service
	clients []namedClient
	dir     string // a fresh temporary directory
}

type namedClient struct {
	name string
	filesystemconnect.FilesystemClient
}

func newEnv(t *testing.T) *env {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc := New(auth.NewGuard(defaults.New(me.Username)), log)

	mux := http.NewServeMux()
	mux.Handle(filesystemconnect.NewFilesystemHandler(svc))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() {
		if err := svc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		srv.Close()
	})

	h2c := new(http.Protocols)
	h2c.SetUnencryptedHTTP2(true)
	h2cClient := &http.Client{Transport: &http.Transport{Protocols: h2c}}
	h1Client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(h2cClient.CloseIdleConnections)
	t.Cleanup(h1Client.CloseIdleConnections)

	return &env{
		svc: svc,
		clients: []namedClient{
			{"proto-h2c", filesystemconnect.NewFilesystemClient(h2cClient, srv.URL)},
			{"json-http1", filesystemconnect.NewFilesystemClient(h1Client, srv.URL, connect.WithProtoJSON())},
		},
		dir: t.TempDir(),
	}
}

// each runs f once per client, in a fresh subdirectory of e.dir.
func (e *env) each(t *testing.T, f func(t *testing.T, c filesystemconnect.FilesystemClient, dir string)) {
	for _, c := range e.clients {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(e.dir, c.name)
			must(t, os.Mkdir(dir, 0o755))
			f(t, c.FilesystemClient, dir)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(data), perm))
	must(t, os.Chmod(path, perm)) // regardless of umask
}

func wantCode(t *testing.T, err error, code connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got success, want %v", code)
	}
	if got := connect.CodeOf(err); got != code {
		t.Fatalf("got %v (%v), want %v", got, err, code)
	}
}

func stat(t *testing.T, c filesystemconnect.FilesystemClient, path string) *rpc.EntryInfo {
	t.Helper()
	res, err := c.Stat(context.Background(), connect.NewRequest(&rpc.StatRequest{Path: path}))
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return res.Msg.GetEntry()
}

func currentNames(t *testing.T) (owner, group string) {
	t.Helper()
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	must(t, err)
	owner, group = u.Username, strconv.Itoa(os.Getegid())
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return owner, group
}

func TestStat(t *testing.T) {
	e := newEnv(t)
	owner, group := currentNames(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		file := filepath.Join(dir, "file.txt")
		writeFile(t, file, "hello", 0o640)
		fi, err := os.Lstat(file)
		must(t, err)

		got := stat(t, c, file)
		if got.GetName() != "file.txt" || got.GetPath() != file || got.GetType() != rpc.FileType_FILE_TYPE_FILE {
			t.Errorf("name/path/type = %q %q %v", got.GetName(), got.GetPath(), got.GetType())
		}
		if got.GetSize() != 5 || got.GetMode() != 0o640 || got.GetPermissions() != "-rw-r-----" {
			t.Errorf("size/mode/permissions = %d %o %q", got.GetSize(), got.GetMode(), got.GetPermissions())
		}
		if got.GetOwner() != owner || got.GetGroup() != group {
			t.Errorf("owner/group = %q %q, want %q %q", got.GetOwner(), got.GetGroup(), owner, group)
		}
		if !got.GetModifiedTime().AsTime().Equal(fi.ModTime()) {
			t.Errorf("modified = %v, want %v", got.GetModifiedTime().AsTime(), fi.ModTime())
		}
		if got.SymlinkTarget != nil {
			t.Errorf("symlink_target = %q on a regular file", got.GetSymlinkTarget())
		}

		sub := filepath.Join(dir, "sub")
		must(t, os.Mkdir(sub, 0o750))
		must(t, os.Chmod(sub, 0o750))
		if got := stat(t, c, sub); got.GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || got.GetPermissions() != "drwxr-x---" || got.GetMode() != 0o750 {
			t.Errorf("dir: type %v permissions %q mode %o", got.GetType(), got.GetPermissions(), got.GetMode())
		}
	})
}

// TestStatSymlinks pins E2B's convention: a symlink reports its target's type
// and permission bits, its own size and "L" permissions string, and the fully
// resolved target path.
func TestStatSymlinks(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		file := filepath.Join(dir, "file.txt")
		writeFile(t, file, "hello", 0o640)
		sub := filepath.Join(dir, "sub")
		must(t, os.Mkdir(sub, 0o755))
		must(t, os.Symlink("file.txt", filepath.Join(dir, "to-file")))
		must(t, os.Symlink("to-file", filepath.Join(dir, "chain"))) // link → link → file
		must(t, os.Symlink(sub, filepath.Join(dir, "to-dir")))
		must(t, os.Symlink("missing", filepath.Join(dir, "dangling")))
		must(t, os.Symlink("loop", filepath.Join(dir, "loop")))

		for _, tc := range []struct {
			name, target string
			typ          rpc.FileType
			mode         uint32
		}{
			{"to-file", file, rpc.FileType_FILE_TYPE_FILE, 0o640},
			{"chain", file, rpc.FileType_FILE_TYPE_FILE, 0o640},
			{"to-dir", sub, rpc.FileType_FILE_TYPE_DIRECTORY, 0o755},
			{"dangling", "missing", rpc.FileType_FILE_TYPE_SYMLINK, 0o777},
			{"loop", "loop", rpc.FileType_FILE_TYPE_SYMLINK, 0o777},
		} {
			path := filepath.Join(dir, tc.name)
			got := stat(t, c, path)
			lfi, err := os.Lstat(path)
			must(t, err)
			if got.GetName() != tc.name || got.GetPath() != path {
				t.Errorf("%s: name %q path %q", tc.name, got.GetName(), got.GetPath())
			}
			if got.GetType() != tc.typ || got.GetMode() != tc.mode {
				t.Errorf("%s: type %v mode %o, want %v %o", tc.name, got.GetType(), got.GetMode(), tc.typ, tc.mode)
			}
			if got.SymlinkTarget == nil || got.GetSymlinkTarget() != tc.target {
				t.Errorf("%s: symlink_target %v, want %q", tc.name, got.SymlinkTarget, tc.target)
			}
			if got.GetPermissions() != "Lrwxrwxrwx" || got.GetSize() != lfi.Size() {
				t.Errorf("%s: permissions %q size %d, want Lrwxrwxrwx %d", tc.name, got.GetPermissions(), got.GetSize(), lfi.Size())
			}
		}
	})
}

func TestStatMetadata(t *testing.T) {
	e := newEnv(t)
	file := filepath.Join(e.dir, "tagged")
	writeFile(t, file, "", 0o644)
	if err := unix.Setxattr(file, "user.e2b.owner-team", []byte("infra"), 0); err != nil {
		t.Skipf("no user xattrs here: %v", err)
	}
	must(t, unix.Setxattr(file, "user.other", []byte("ignored"), 0))
	for _, c := range e.clients {
		got := stat(t, c, file).GetMetadata()
		if len(got) != 1 || got["owner-team"] != "infra" {
			t.Errorf("%s: metadata %v", c.name, got)
		}
	}
}

func TestRelativePaths(t *testing.T) {
	e := newEnv(t)
	me, err := user.Current()
	must(t, err)
	home := filepath.Clean(me.HomeDir)
	if _, err := os.Stat(home); err != nil {
		t.Skipf("home %s: %v", home, err)
	}
	for _, c := range e.clients {
		for _, p := range []string{".", "~", "~/", "./"} {
			if got := stat(t, c, p).GetPath(); got != home {
				t.Errorf("%s: stat %q path %q, want %q", c.name, p, got, home)
			}
		}
	}
}

func TestListDir(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		for _, d := range []string{"a/b/d", "z"} {
			must(t, os.MkdirAll(filepath.Join(dir, d), 0o755))
		}
		for _, f := range []string{"a/b/c.txt", "a/b/d/e.txt", "f.txt"} {
			writeFile(t, filepath.Join(dir, f), f, 0o644)
		}
		must(t, os.Symlink("a", filepath.Join(dir, "link")))

		level1 := []string{"a", "f.txt", "link", "z"}
		level2 := []string{"a", "a/b", "f.txt", "link", "z"}
		level3 := []string{"a", "a/b", "a/b/c.txt", "a/b/d", "f.txt", "link", "z"}
		all := []string{"a", "a/b", "a/b/c.txt", "a/b/d", "a/b/d/e.txt", "f.txt", "link", "z"}
		for _, tc := range []struct {
			depth uint32
			want  []string
		}{{0, level1}, {1, level1}, {2, level2}, {3, level3}, {4, all}, {1000, all}} {
			res, err := c.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: dir, Depth: tc.depth}))
			if err != nil {
				t.Fatalf("depth %d: %v", tc.depth, err)
			}
			var got []string
			for _, en := range res.Msg.GetEntries() {
				rel, err := filepath.Rel(dir, en.GetPath())
				must(t, err)
				got = append(got, rel)
				if en.GetName() != filepath.Base(rel) {
					t.Errorf("entry %s named %q", rel, en.GetName())
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("depth %d: got %v, want %v", tc.depth, got, tc.want)
			}
		}

		// Entries are full EntryInfos; the symlink reports its target.
		res, err := c.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: dir}))
		must(t, err)
		byName := map[string]*rpc.EntryInfo{}
		for _, en := range res.Msg.GetEntries() {
			byName[en.GetName()] = en
		}
		if f := byName["f.txt"]; f.GetSize() != 5 || f.GetType() != rpc.FileType_FILE_TYPE_FILE || f.GetOwner() == "" || f.GetModifiedTime() == nil {
			t.Errorf("f.txt entry: %v", f)
		}
		if l := byName["link"]; l.GetType() != rpc.FileType_FILE_TYPE_DIRECTORY || l.GetSymlinkTarget() != filepath.Join(dir, "a") {
			t.Errorf("link entry: %v", l)
		}

		// Listing through a symlink names entries under the link.
		res, err = c.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "link")}))
		must(t, err)
		if got := res.Msg.GetEntries(); len(got) != 1 || got[0].GetPath() != filepath.Join(dir, "link", "b") {
			t.Errorf("list via link: %v", got)
		}

		// An empty directory lists as nothing, not an error.
		res, err = c.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: filepath.Join(dir, "z")}))
		must(t, err)
		if len(res.Msg.GetEntries()) != 0 {
			t.Errorf("empty dir: %v", res.Msg.GetEntries())
		}
	})
}

func TestMakeDir(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		path := filepath.Join(dir, "x", "y", "z")
		res, err := c.MakeDir(context.Background(), connect.NewRequest(&rpc.MakeDirRequest{Path: path}))
		must(t, err)
		if en := res.Msg.GetEntry(); en.GetPath() != path || en.GetName() != "z" || en.GetType() != rpc.FileType_FILE_TYPE_DIRECTORY {
			t.Errorf("entry %v", en)
		}
		if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
			t.Errorf("not created: %v", err)
		}

		_, err = c.MakeDir(context.Background(), connect.NewRequest(&rpc.MakeDirRequest{Path: path}))
		wantCode(t, err, connect.CodeAlreadyExists)

		// A symlink to a directory is an existing directory, as in E2B.
		must(t, os.Symlink(path, filepath.Join(dir, "link")))
		_, err = c.MakeDir(context.Background(), connect.NewRequest(&rpc.MakeDirRequest{Path: filepath.Join(dir, "link")}))
		wantCode(t, err, connect.CodeAlreadyExists)

		file := filepath.Join(dir, "file")
		writeFile(t, file, "", 0o644)
		_, err = c.MakeDir(context.Background(), connect.NewRequest(&rpc.MakeDirRequest{Path: file}))
		wantCode(t, err, connect.CodeInvalidArgument)
		if !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("message %q does not say what is wrong", err)
		}
		_, err = c.MakeDir(context.Background(), connect.NewRequest(&rpc.MakeDirRequest{Path: filepath.Join(file, "sub")}))
		wantCode(t, err, connect.CodeInvalidArgument)
	})
}

// TestMakeDirOwnership checks that directories made for another user, and
// the parents made along the way, belong to that user.
func TestMakeDirOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	e := newEnv(t)
	must(t, os.Chmod(e.dir, 0o755))
	for _, c := range e.clients {
		req := connect.NewRequest(&rpc.MakeDirRequest{Path: filepath.Join(e.dir, c.name, "p", "q")})
		req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("nobody:")))
		res, err := c.MakeDir(context.Background(), req)
		must(t, err)
		if res.Msg.GetEntry().GetOwner() != "nobody" {
			t.Errorf("%s: owner %q", c.name, res.Msg.GetEntry().GetOwner())
		}
		for _, p := range []string{filepath.Join(e.dir, c.name), filepath.Join(e.dir, c.name, "p")} {
			fi, err := os.Stat(p)
			must(t, err)
			if uid := strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Uid)); uid != nobody.Uid {
				t.Errorf("%s: %s owned by %s, want %s", c.name, p, uid, nobody.Uid)
			}
		}
		// envd's own directory was not touched.
		fi, err := os.Stat(e.dir)
		must(t, err)
		if fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: existing parent was chowned", c.name)
		}
	}
}

func TestMove(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		src := filepath.Join(dir, "src.txt")
		writeFile(t, src, "data", 0o600)
		dst := filepath.Join(dir, "new", "parents", "dst.txt")
		res, err := c.Move(context.Background(), connect.NewRequest(&rpc.MoveRequest{Source: src, Destination: dst}))
		must(t, err)
		if en := res.Msg.GetEntry(); en.GetPath() != dst || en.GetName() != "dst.txt" || en.GetSize() != 4 || en.GetType() != rpc.FileType_FILE_TYPE_FILE {
			t.Errorf("entry %v", en)
		}
		if _, err := os.Lstat(src); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("source still there: %v", err)
		}
		if b, err := os.ReadFile(dst); err != nil || string(b) != "data" {
			t.Errorf("destination %q %v", b, err)
		}

		// A directory moves with its contents.
		must(t, os.MkdirAll(filepath.Join(dir, "d1", "in"), 0o755))
		res, err = c.Move(context.Background(), connect.NewRequest(&rpc.MoveRequest{Source: filepath.Join(dir, "d1"), Destination: filepath.Join(dir, "d2")}))
		must(t, err)
		if res.Msg.GetEntry().GetType() != rpc.FileType_FILE_TYPE_DIRECTORY {
			t.Errorf("dir entry %v", res.Msg.GetEntry())
		}
		if _, err := os.Stat(filepath.Join(dir, "d2", "in")); err != nil {
			t.Error(err)
		}

		// An existing destination file is replaced, as rename(2) does.
		other := filepath.Join(dir, "other.txt")
		writeFile(t, other, "replacement", 0o644)
		_, err = c.Move(context.Background(), connect.NewRequest(&rpc.MoveRequest{Source: other, Destination: dst}))
		must(t, err)
		if b, _ := os.ReadFile(dst); string(b) != "replacement" {
			t.Errorf("not replaced: %q", b)
		}
	})
}

func TestRemove(t *testing.T) {
	e := newEnv(t)
	e.each(t, func(t *testing.T, c filesystemconnect.FilesystemClient, dir string) {
		file := filepath.Join(dir, "f")
		writeFile(t, file, "x", 0o644)
		tree := filepath.Join(dir, "tree")
		must(t, os.MkdirAll(filepath.Join(tree, "a", "b"), 0o755))
		writeFile(t, filepath.Join(tree, "a", "b", "c"), "x", 0o644)
		link := filepath.Join(dir, "link")
		must(t, os.Symlink(file, link))

		for _, p := range []string{link, file, tree} {
			if _, err := c.Remove(context.Background(), connect.NewRequest(&rpc.RemoveRequest{Path: p})); err != nil {
				t.Fatalf("remove %s: %v", p, err)
			}
			if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still there: %v", p, err)
			}
		}
	})
	// Removing what is not there succeeds, as with E2B's envd, whether the
	// name or its parent is missing.
	for _, p := range []string{filepath.Join(e.dir, "missing"), filepath.Join(e.dir, "missing", "child")} {
		if _, err := e.clients[0].Remove(context.Background(), connect.NewRequest(&rpc.RemoveRequest{Path: p})); err != nil {
			t.Errorf("remove missing %s: %v", p, err)
		}
	}
	// Removing a symlink leaves its target.
	target := filepath.Join(e.dir, "target")
	writeFile(t, target, "keep", 0o644)
	must(t, os.Symlink(target, filepath.Join(e.dir, "l")))
	_, err := e.clients[0].Remove(context.Background(), connect.NewRequest(&rpc.RemoveRequest{Path: filepath.Join(e.dir, "l")}))
	must(t, err)
	if _, err := os.Stat(target); err != nil {
		t.Errorf("target removed with its link: %v", err)
	}
}

// TestErrors sends every RPC the bad inputs it must reject, with the code
// each must produce.
func TestErrors(t *testing.T) {
	e := newEnv(t)
	dir := e.dir
	file := filepath.Join(dir, "file")
	writeFile(t, file, "x", 0o644)
	full := filepath.Join(dir, "full")
	must(t, os.MkdirAll(filepath.Join(full, "inner"), 0o755))
	must(t, os.Mkdir(filepath.Join(dir, "emptydir"), 0o755))
	missing := filepath.Join(dir, "missing")
	loop := filepath.Join(dir, "loop")
	must(t, os.Symlink("loop", loop))
	ctx := context.Background()

	type call func(c filesystemconnect.FilesystemClient) error
	stat := func(p string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.Stat(ctx, connect.NewRequest(&rpc.StatRequest{Path: p}))
			return err
		}
	}
	list := func(p string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.ListDir(ctx, connect.NewRequest(&rpc.ListDirRequest{Path: p}))
			return err
		}
	}
	mkdir := func(p string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.MakeDir(ctx, connect.NewRequest(&rpc.MakeDirRequest{Path: p}))
			return err
		}
	}
	move := func(src, dst string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.Move(ctx, connect.NewRequest(&rpc.MoveRequest{Source: src, Destination: dst}))
			return err
		}
	}
	remove := func(p string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.Remove(ctx, connect.NewRequest(&rpc.RemoveRequest{Path: p}))
			return err
		}
	}
	createWatcher := func(p string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.CreateWatcher(ctx, connect.NewRequest(&rpc.CreateWatcherRequest{Path: p}))
			return err
		}
	}
	watchDir := func(p string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			s, err := c.WatchDir(ctx, connect.NewRequest(&rpc.WatchDirRequest{Path: p}))
			if err != nil {
				return err
			}
			defer s.Close()
			for s.Receive() {
			}
			return s.Err()
		}
	}
	getEvents := func(id string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.GetWatcherEvents(ctx, connect.NewRequest(&rpc.GetWatcherEventsRequest{WatcherId: id}))
			return err
		}
	}
	removeWatcher := func(id string) call {
		return func(c filesystemconnect.FilesystemClient) error {
			_, err := c.RemoveWatcher(ctx, connect.NewRequest(&rpc.RemoveWatcherRequest{WatcherId: id}))
			return err
		}
	}
	unknownUser := func(c filesystemconnect.FilesystemClient) error {
		req := connect.NewRequest(&rpc.StatRequest{Path: dir})
		req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("no-such-user-roost:")))
		_, err := c.Stat(ctx, req)
		return err
	}

	for _, tc := range []struct {
		name string
		call call
		code connect.Code
	}{
		{"stat empty", stat(""), connect.CodeInvalidArgument},
		{"stat NUL", stat("a\x00b"), connect.CodeInvalidArgument},
		{"stat missing", stat(missing), connect.CodeNotFound},
		{"stat through a file", stat(filepath.Join(file, "x")), connect.CodeInvalidArgument},
		{"stat unknown user", unknownUser, connect.CodeInvalidArgument},
		{"list empty", list(""), connect.CodeInvalidArgument},
		{"list missing", list(missing), connect.CodeNotFound},
		{"list file", list(file), connect.CodeInvalidArgument},
		{"list cyclic symlink", list(loop), connect.CodeFailedPrecondition},
		{"mkdir empty", mkdir(""), connect.CodeInvalidArgument},
		{"mkdir NUL", mkdir(dir + "/a\x00"), connect.CodeInvalidArgument},
		{"mkdir existing dir", mkdir(dir), connect.CodeAlreadyExists},
		{"mkdir existing file", mkdir(file), connect.CodeInvalidArgument},
		{"mkdir under file", mkdir(filepath.Join(file, "a", "b")), connect.CodeInvalidArgument},
		{"move empty source", move("", filepath.Join(dir, "x")), connect.CodeInvalidArgument},
		{"move empty destination", move(file, ""), connect.CodeInvalidArgument},
		{"move missing source", move(missing, filepath.Join(dir, "x")), connect.CodeNotFound},
		{"move into itself", move(full, filepath.Join(full, "inner", "self")), connect.CodeInvalidArgument},
		{"move dir onto non-empty dir", move(filepath.Join(dir, "emptydir"), full), connect.CodeAlreadyExists},
		{"move file onto dir", move(file, full), connect.CodeAlreadyExists},
		{"move under a file", move(full, filepath.Join(file, "x")), connect.CodeInvalidArgument},
		{"remove empty", remove(""), connect.CodeInvalidArgument},
		{"remove below a file", remove(filepath.Join(file, "x")), connect.CodeInvalidArgument},
		{"remove root", remove("/"), connect.CodeInvalidArgument},
		{"watch missing", watchDir(missing), connect.CodeNotFound},
		{"watch file", watchDir(file), connect.CodeInvalidArgument},
		{"watch empty", watchDir(""), connect.CodeInvalidArgument},
		{"create watcher missing", createWatcher(missing), connect.CodeNotFound},
		{"create watcher file", createWatcher(file), connect.CodeInvalidArgument},
		{"get events unknown id", getEvents("wNOPE"), connect.CodeNotFound},
		{"get events empty id", getEvents(""), connect.CodeNotFound},
		{"remove watcher unknown id", removeWatcher("wNOPE"), connect.CodeNotFound},
	} {
		for _, c := range e.clients {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				wantCode(t, tc.call(c), tc.code)
			})
		}
	}
	// Nothing above created anything.
	for _, p := range []string{filepath.Join(dir, "x"), filepath.Join(full, "inner", "self")} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s exists after a rejected request: %v", p, err)
		}
	}
}

// TestPermissionDenied needs a user the kernel refuses; as root it checks the
// mapping alone (TestCodeOf covers that too).
func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root is never denied; see TestCodeOf")
	}
	e := newEnv(t)
	locked := filepath.Join(e.dir, "locked")
	must(t, os.Mkdir(locked, 0o000))
	t.Cleanup(func() { _ = os.Chmod(locked, 0o755) })
	for _, c := range e.clients {
		_, err := c.ListDir(context.Background(), connect.NewRequest(&rpc.ListDirRequest{Path: locked}))
		wantCode(t, err, connect.CodePermissionDenied)
	}
}
