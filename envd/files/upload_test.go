package files

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"roost.dev/roost/envd/filesystem"
)

func gzipped(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestUploadMultipartSingle(t *testing.T) {
	e := newTestEnv(t)
	dst := e.path("out/single.txt")
	// files.write(path, data) sends the path both as query and filename; an
	// upload URL carries the path and whatever local name the form has.
	for _, filename := range []string{dst, "local-name.txt"} {
		resp := e.postForm(t, url.Values{"path": {dst}}, formPart{filename: filename, data: []byte("payload " + filename)})
		got := wantEntries(t, resp)
		if len(got) != 1 || !reflect.DeepEqual(got[0], entry{Path: dst, Name: "single.txt", Type: "file"}) {
			t.Fatalf("entries %+v", got)
		}
		wantFile(t, dst, []byte("payload "+filename))
	}
	wantMissing(t, e.path("out/local-name.txt"))
	noTemps(t, e.dir)
}

func TestUploadMultipartSeveral(t *testing.T) {
	e := newTestEnv(t)
	sub := homeScratch(t, e)
	files := []struct{ name, path string }{
		{"a.txt", e.path("a.txt")},
		{"b.bin", e.path("deep/er/b.bin")},
		{"c.txt", sub + "/c.txt"}, // relative: the user's home
		{"d.txt", "~/" + sub + "/x/d.txt"},
	}
	var parts []formPart
	for i, f := range files {
		parts = append(parts, formPart{filename: f.path, data: []byte(fmt.Sprintf("content %d", i))})
	}
	// Other fields are ignored.
	parts = append(parts[:2:2], append([]formPart{{field: "note", data: []byte("ignored")}}, parts[2:]...)...)
	got := wantEntries(t, e.postForm(t, nil, parts...))

	if len(got) != len(files) {
		t.Fatalf("entries %+v", got)
	}
	for i, f := range files {
		want, _ := e.user.Resolve(f.path)
		if !reflect.DeepEqual(got[i], entry{Path: want, Name: f.name, Type: "file"}) {
			t.Errorf("entry %d = %+v, want path %s", i, got[i], want)
		}
		wantFile(t, want, []byte(fmt.Sprintf("content %d", i)))
	}
	noTemps(t, e.dir)
}

func TestUploadOctetStream(t *testing.T) {
	e := newTestEnv(t)
	data := bytes.Repeat([]byte("octet-stream body "), 100000)

	dst := e.path("plain/file.bin")
	got := wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, nil, bytes.NewReader(data)))
	if len(got) != 1 || !reflect.DeepEqual(got[0], entry{Path: dst, Name: "file.bin", Type: "file"}) {
		t.Fatalf("entries %+v", got)
	}
	wantFile(t, dst, data)

	dst = e.path("gz/file.bin")
	got = wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, http.Header{"Content-Encoding": {"gzip"}}, bytes.NewReader(gzipped(t, data))))
	if len(got) != 1 || got[0].Path != dst {
		t.Fatalf("entries %+v", got)
	}
	wantFile(t, dst, data)

	// Chunked (unknown length), as a streaming SDK upload is.
	dst = e.path("chunked.bin")
	wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, nil, io.MultiReader(bytes.NewReader(data))))
	wantFile(t, dst, data)

	// Empty body: an empty file.
	dst = e.path("empty")
	wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, nil, http.NoBody))
	wantFile(t, dst, nil)

	// Content-Type parameters and identity encoding are fine.
	dst = e.path("params")
	wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, http.Header{"Content-Type": {"application/octet-stream; charset=binary"}, "Content-Encoding": {"identity"}}, strings.NewReader("p")))
	wantFile(t, dst, []byte("p"))
	noTemps(t, e.dir)
}

func TestUploadMultipartGzip(t *testing.T) {
	e := newTestEnv(t)
	dst := e.path("mpgz.txt")
	body, ct := buildForm(t, formPart{filename: dst, data: []byte("zipped form")})
	resp := e.do(t, http.MethodPost, nil, http.Header{"Content-Type": {ct}, "Content-Encoding": {"gzip"}}, bytes.NewReader(gzipped(t, body)))
	if got := wantEntries(t, resp); len(got) != 1 {
		t.Fatalf("entries %+v", got)
	}
	wantFile(t, dst, []byte("zipped form"))
}

func TestUploadOverwrite(t *testing.T) {
	e := newTestEnv(t)
	dst := e.path("existing.sh")
	writeFile(t, dst, []byte("old content that is longer than the new"), 0o750)

	wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, nil, strings.NewReader("new")))
	wantFile(t, dst, []byte("new"))
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o750 {
		t.Errorf("mode %v, want the existing 0750 kept", fi.Mode().Perm())
	}

	wantEntries(t, e.postForm(t, nil, formPart{filename: dst, data: []byte("newer")}))
	wantFile(t, dst, []byte("newer"))
	if fi, _ := os.Stat(dst); fi.Mode().Perm() != 0o750 {
		t.Errorf("mode %v, want the existing 0750 kept", fi.Mode().Perm())
	}

	fresh := e.path("fresh.txt")
	wantEntries(t, e.postOctet(t, url.Values{"path": {fresh}}, nil, strings.NewReader("x")))
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o666&^umask(t) {
		t.Errorf("new file mode %v, want %v", fi.Mode().Perm(), 0o666&^umask(t))
	}
	noTemps(t, e.dir)
}

func TestUploadParents(t *testing.T) {
	e := newTestEnv(t)
	dst := e.path("a/b/c/d/file.txt")
	wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, nil, strings.NewReader("deep")))
	wantFile(t, dst, []byte("deep"))
	for _, d := range []string{"a", "a/b", "a/b/c", "a/b/c/d"} {
		fi, err := os.Stat(e.path(d))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755&^umask(t) {
			t.Errorf("%s: %v %v", d, fi.Mode(), err)
		}
	}
}

func TestUploadSymlink(t *testing.T) {
	e := newTestEnv(t)
	target := e.path("real/target.txt")
	writeFile(t, target, []byte("old"), 0o600)
	link := e.path("link.txt")
	if err := os.Symlink("real/target.txt", link); err != nil {
		t.Fatal(err)
	}
	dangling := e.path("dangling")
	if err := os.Symlink("made/by/upload.txt", dangling); err != nil {
		t.Fatal(err)
	}

	got := wantEntries(t, e.postForm(t, nil,
		formPart{filename: link, data: []byte("via link")},
		formPart{filename: dangling, data: []byte("via dangling link")}))
	if got[0].Path != link || got[1].Path != dangling {
		t.Errorf("entries %+v", got)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("link replaced: %v %v", fi.Mode(), err)
	}
	wantFile(t, target, []byte("via link"))
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("target mode %v", fi.Mode())
	}
	wantFile(t, e.path("made/by/upload.txt"), []byte("via dangling link"))
	noTemps(t, e.dir)
}

func TestUploadDevice(t *testing.T) {
	e := newTestEnv(t)
	wantEntries(t, e.postOctet(t, url.Values{"path": {"/dev/null"}}, nil, strings.NewReader("discarded")))
	if fi, err := os.Lstat("/dev/null"); err != nil || fi.Mode()&fs.ModeCharDevice == 0 {
		t.Fatalf("/dev/null is no longer a device: %v %v", fi.Mode(), err)
	}
	// /dev/full fails every write with ENOSPC.
	msg := wantError(t, e.postOctet(t, url.Values{"path": {"/dev/full"}}, nil, strings.NewReader("x")), http.StatusInsufficientStorage)
	if !strings.Contains(msg, "disk space") {
		t.Errorf("message %q", msg)
	}
}

func TestUploadErrors(t *testing.T) {
	e := newTestEnv(t)
	existing := e.path("existing.txt")
	writeFile(t, existing, []byte("keep me"), 0o644)
	if err := os.Mkdir(e.path("adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	fifo := e.path("fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	form, formCT := buildForm(t, formPart{filename: existing, data: bytes.Repeat([]byte("new data "), 10000)})
	gz := gzipped(t, bytes.Repeat([]byte("new data "), 10000))

	type req struct {
		q    url.Values
		hdr  http.Header
		body []byte
	}
	octet := func(path string, body []byte, hdr ...string) req {
		h := http.Header{"Content-Type": {"application/octet-stream"}}
		for i := 0; i+1 < len(hdr); i += 2 {
			h.Set(hdr[i], hdr[i+1])
		}
		return req{url.Values{"path": {path}}, h, body}
	}
	multi := func(q url.Values, parts ...formPart) req {
		body, ct := buildForm(t, parts...)
		return req{q, http.Header{"Content-Type": {ct}}, body}
	}
	cases := []struct {
		name   string
		req    req
		status int
		msg    string
	}{
		{"octet missing path", req{nil, http.Header{"Content-Type": {"application/octet-stream"}}, []byte("x")}, 400, "missing path"},
		{"octet directory", octet(e.path("adir"), []byte("x")), 400, "path is a directory"},
		{"octet fifo", octet(fifo, []byte("x")), 400, "not a regular file"},
		{"octet parent is a file", octet(existing+"/sub/x", []byte("x")), 400, "not a directory"},
		{"octet NUL", octet("a\x00b", []byte("x")), 400, "NUL"},
		{"corrupt gzip header", octet(existing, []byte("not gzip at all"), "Content-Encoding", "gzip"), 400, "gunzip"},
		{"corrupt gzip stream", octet(existing, append(gz[:20:20], bytes.Repeat([]byte{0xff}, 100)...), "Content-Encoding", "gzip"), 400, "gunzip"},
		{"truncated gzip", octet(existing, gz[:len(gz)/2], "Content-Encoding", "gzip"), 400, "gunzip"},
		{"gzip checksum", octet(existing, append(gz[:len(gz)-8:len(gz)-8], 1, 2, 3, 4, 5, 6, 7, 8), "Content-Encoding", "gzip"), 400, "gunzip"},
		{"unsupported encoding", octet(existing, []byte("x"), "Content-Encoding", "br"), 415, "content encoding"},
		{"unsupported type", req{url.Values{"path": {existing}}, http.Header{"Content-Type": {"text/plain"}}, []byte("x")}, 415, "content type"},
		{"no content type", req{url.Values{"path": {existing}}, nil, []byte("x")}, 415, "content type"},
		{"bad content type", req{url.Values{"path": {existing}}, http.Header{"Content-Type": {"multipart/form-data; boundary"}}, []byte("x")}, 400, "multipart"},
		{"unparsable content type", req{url.Values{"path": {existing}}, http.Header{"Content-Type": {"/"}}, []byte("x")}, 415, "content type"},
		{"multipart/mixed", req{url.Values{"path": {existing}}, http.Header{"Content-Type": {"multipart/mixed; boundary=x"}}, []byte("x")}, 415, "content type"},
		{"missing boundary", req{url.Values{"path": {existing}}, http.Header{"Content-Type": {"multipart/form-data"}}, []byte("x")}, 400, "boundary"},
		{"truncated multipart", req{nil, http.Header{"Content-Type": {formCT}}, form[:len(form)/2]}, 400, "request body"},
		{"garbage multipart", req{nil, http.Header{"Content-Type": {formCT}}, []byte("this is not multipart")}, 400, "multipart"},
		{"empty multipart", req{nil, http.Header{"Content-Type": {formCT}}, nil}, 400, "multipart"},
		{"no file parts", multi(nil, formPart{field: "other", data: []byte("x")}), 400, "no file"},
		{"no parts", multi(nil), 400, "no file"},
		{"file without filename", multi(nil, formPart{data: []byte("x")}), 400, "no filename"},
		{"path and two files", multi(url.Values{"path": {existing}}, formPart{filename: "a", data: []byte("1")}, formPart{filename: "b", data: []byte("2")}), 400, "several files"},
		{"same path twice", multi(nil, formPart{filename: existing, data: []byte("1")}, formPart{filename: existing, data: []byte("2")}), 400, "twice"},
		{"multipart directory", multi(nil, formPart{filename: e.path("fine.txt"), data: []byte("1")}, formPart{filename: e.path("adir"), data: []byte("2")}), 400, "path is a directory"},
		{"file then a file inside it", multi(nil, formPart{filename: e.path("fine.txt"), data: []byte("1")}, formPart{filename: e.path("fine.txt/inner"), data: []byte("2")}), 400, "cannot also be a directory"},
		{"file inside then the file", multi(nil, formPart{filename: e.path("made/inner"), data: []byte("1")}, formPart{filename: e.path("made"), data: []byte("2")}), 400, "path is a directory"},
		{"unknown user", req{url.Values{"path": {existing}, "username": {"no-such-user-roost"}}, http.Header{"Content-Type": {"application/octet-stream"}}, []byte("x")}, 400, "unknown user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := e.do(t, http.MethodPost, c.req.q, c.req.hdr, bytes.NewReader(c.req.body))
			msg := wantError(t, resp, c.status)
			t.Logf("%d %s", c.status, msg)
			if !strings.Contains(msg, c.msg) {
				t.Errorf("message %q, want it to mention %q", msg, c.msg)
			}
			// Nothing is committed by a failed request.
			wantFile(t, existing, []byte("keep me"))
			wantMissing(t, e.path("fine.txt"))
			wantMissing(t, e.path("a"))
			noTemps(t, e.dir)
		})
	}
}

// TestUploadFailureAfterFirstPart: a later part's failure must not commit
// the parts before it.
func TestUploadFailureAfterFirstPart(t *testing.T) {
	e := newTestEnv(t)
	first, second := e.path("first.txt"), e.path("second.txt")
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, _ := mw.CreateFormFile("file", first)
	w.Write(bytes.Repeat([]byte("1"), 3<<20))
	w, _ = mw.CreateFormFile("file", second)
	w.Write(bytes.Repeat([]byte("2"), 3<<20))
	// No closing boundary: the body ends inside the second part.
	resp := e.do(t, http.MethodPost, nil, http.Header{"Content-Type": {mw.FormDataContentType()}}, &buf)
	wantError(t, resp, http.StatusBadRequest)
	wantMissing(t, first)
	wantMissing(t, second)
	noTemps(t, e.dir)
}

// TestUploadHandMadeMultipart covers what other clients send: a filename*
// (RFC 2231) parameter, LF line endings, a preamble and an epilogue.
func TestUploadHandMadeMultipart(t *testing.T) {
	e := newTestEnv(t)
	dst := e.path("naïve dir/ü.txt")
	body := "preamble to ignore\n" +
		"--XyZ\n" +
		"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''" + url.PathEscape(dst) + "\n" +
		"Content-Type: text/plain\n" +
		"\n" +
		"hand made\n" +
		"--XyZ--\n" +
		"epilogue\n"
	resp := e.do(t, http.MethodPost, nil, http.Header{"Content-Type": {`multipart/form-data; boundary="XyZ"`}}, strings.NewReader(body))
	got := wantEntries(t, resp)
	if len(got) != 1 || got[0].Path != dst || got[0].Name != "ü.txt" {
		t.Fatalf("entries %+v", got)
	}
	wantFile(t, dst, []byte("hand made"))
}

func TestUploadNoSpace(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	mnt := e.path("small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=256k"); err != nil {
		t.Skip("cannot mount a small tmpfs:", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	existing := filepath.Join(mnt, "existing.txt")
	writeFile(t, existing, []byte("keep me"), 0o644)
	big := bytes.Repeat([]byte("z"), 1<<20)

	msg := wantError(t, e.postOctet(t, url.Values{"path": {existing}}, nil, bytes.NewReader(big)), http.StatusInsufficientStorage)
	if !strings.Contains(msg, "disk space") || !strings.Contains(msg, existing) || strings.Contains(msg, filesystem.TempFilePrefix) {
		t.Errorf("message %q", msg)
	}
	wantError(t, e.postForm(t, nil, formPart{filename: filepath.Join(mnt, "new/file"), data: big}), http.StatusInsufficientStorage)
	wantFile(t, existing, []byte("keep me"))
	wantMissing(t, filepath.Join(mnt, "new/file"))
	noTemps(t, mnt)

	// The space is back: a small file fits.
	wantEntries(t, e.postOctet(t, url.Values{"path": {existing}}, nil, strings.NewReader("fits")))
	wantFile(t, existing, []byte("fits"))
}

func TestUploadOwnership(t *testing.T) {
	requireRoot(t)
	e := newTestEnv(t)
	nobody, err := e.guard.User("nobody", nil)
	if err != nil {
		t.Skip("no user nobody:", err)
	}
	existing := e.path("root-owned.txt")
	writeFile(t, existing, []byte("old"), 0o640)
	dst := e.path("made/for/nobody.txt")
	q := url.Values{"username": {"nobody"}}
	wantEntries(t, e.postForm(t, q, formPart{filename: dst, data: []byte("hi")}, formPart{filename: existing, data: []byte("new")}))

	owner := func(p string) (uint32, uint32) {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	for _, p := range []string{e.path("made"), e.path("made/for"), dst, existing} {
		if uid, gid := owner(p); uid != nobody.UID || gid != nobody.GID {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, uid, gid, nobody.UID, nobody.GID)
		}
	}
	if uid, _ := owner(e.dir); uid != 0 {
		t.Errorf("existing parent %s changed owner to %d", e.dir, uid)
	}
	if fi, _ := os.Stat(existing); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", fi.Mode().Perm())
	}
}

func TestUploadPermissionDenied(t *testing.T) {
	if rerunUnprivileged(t) {
		return
	}
	e := newTestEnv(t)
	ro := e.path("readonly")
	if err := os.Mkdir(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(ro, 0o755) })
	for _, dst := range []string{filepath.Join(ro, "f.txt"), filepath.Join(ro, "sub/f.txt")} {
		msg := wantError(t, e.postOctet(t, url.Values{"path": {dst}}, nil, strings.NewReader("x")), http.StatusForbidden)
		if !strings.Contains(msg, "permission denied") {
			t.Errorf("message %q", msg)
		}
		wantError(t, e.postForm(t, nil, formPart{filename: dst, data: []byte("x")}), http.StatusForbidden)
	}
	noTemps(t, e.dir)
}

// inotifyLog records the inotify events in one directory, as "OP name".
type inotifyLog struct {
	dir  string
	fsw  *fsnotify.Watcher
	done chan []string
}

func watchInotify(t *testing.T, dir string) *inotifyLog {
	t.Helper()
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsw.Close() })
	if err := fsw.Add(dir); err != nil {
		t.Fatal(err)
	}
	l := &inotifyLog{dir: dir, fsw: fsw, done: make(chan []string, 1)}
	go func() {
		var seen []string
		errs := fsw.Errors
		for {
			select {
			case ev, ok := <-fsw.Events:
				if !ok {
					l.done <- seen
					return
				}
				name := filepath.Base(ev.Name)
				if name == ".marker" {
					l.done <- seen
					return
				}
				for _, op := range []fsnotify.Op{fsnotify.Create, fsnotify.Write, fsnotify.Remove, fsnotify.Rename, fsnotify.Chmod} {
					if ev.Has(op) {
						seen = append(seen, op.String()+" "+name)
					}
				}
			case err, ok := <-errs:
				if !ok {
					errs = nil
					continue
				}
				seen = append(seen, "ERROR "+err.Error()) // fails the caller's checks
			}
		}
	}()
	return l
}

// events returns what was seen so far: inotify keeps order, so once a
// marker file's event arrives, every earlier change has been reported.
func (l *inotifyLog) events(t *testing.T) []string {
	t.Helper()
	writeFile(t, filepath.Join(l.dir, ".marker"), nil, 0o644)
	select {
	case seen := <-l.done:
		return seen
	case <-time.After(20 * time.Second):
		t.Fatal("no inotify event for the marker file")
		return nil
	}
}

// TestUploadNewFileInPlace: a destination that does not exist is written
// under its own name, so a watcher sees CREATE and WRITE for it and nothing
// else, as with E2B's envd.
func TestUploadNewFileInPlace(t *testing.T) {
	e := newTestEnv(t)
	for _, tc := range []struct {
		name string
		post func(dst string) *http.Response
	}{
		{"octet-stream", func(dst string) *http.Response {
			return e.postOctet(t, url.Values{"path": {dst}}, nil, strings.NewReader("in place"))
		}},
		{"multipart", func(dst string) *http.Response {
			return e.postForm(t, nil, formPart{filename: dst, data: []byte("in place")})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := e.path(tc.name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			l := watchInotify(t, dir)
			dst := filepath.Join(dir, "new.txt")
			wantEntries(t, tc.post(dst))
			wantFile(t, dst, []byte("in place"))
			seen := l.events(t)
			if len(seen) < 2 || seen[0] != "CREATE new.txt" || seen[1] != "WRITE new.txt" {
				t.Errorf("events %v, want CREATE new.txt, WRITE new.txt first", seen)
			}
			for _, ev := range seen {
				if !strings.HasSuffix(ev, " new.txt") || strings.HasPrefix(ev, "REMOVE") || strings.HasPrefix(ev, "RENAME") {
					t.Errorf("event %q: want only CREATE, WRITE and CHMOD of new.txt", ev)
				}
			}
		})
	}
}

// TestUploadReplaceIsAtomic: an existing destination is replaced by
// renaming a finished temporary file over it, never truncated in place.
func TestUploadReplaceIsAtomic(t *testing.T) {
	e := newTestEnv(t)
	dst := e.path("existing.txt")
	writeFile(t, dst, []byte("old"), 0o644)
	before, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	l := watchInotify(t, e.dir)
	wantEntries(t, e.postOctet(t, url.Values{"path": {dst}}, nil, strings.NewReader("new")))
	wantFile(t, dst, []byte("new"))
	seen := l.events(t)
	after, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("the destination was rewritten in place, not replaced")
	}
	for _, ev := range seen {
		if ev == "WRITE existing.txt" {
			t.Errorf("events %v: the destination itself was written", seen)
		}
	}
	if !slices.Contains(seen, "CREATE existing.txt") {
		t.Errorf("events %v: no rename onto the destination", seen)
	}
	noTemps(t, e.dir)
}

// TestUploadAbortKeepsOthersFiles: a failed request removes the file it
// created, but not a file someone else has put in its place since.
func TestUploadAbortKeepsOthersFiles(t *testing.T) {
	e := newTestEnv(t)
	for _, replaced := range []bool{false, true} {
		dst := e.path(fmt.Sprintf("created-%v.txt", replaced))
		cp := newCopier()
		b := &batch{user: e.user, cp: cp, log: slog.New(slog.DiscardHandler)}
		if err := b.add(dst, strings.NewReader("ours")); err != nil {
			t.Fatal(err)
		}
		wantFile(t, dst, []byte("ours"))
		if replaced {
			other := e.path("other")
			writeFile(t, other, []byte("theirs"), 0o644)
			if err := os.Rename(other, dst); err != nil {
				t.Fatal(err)
			}
		}
		b.abort()
		b.abort()
		cp.release()
		if replaced {
			wantFile(t, dst, []byte("theirs"))
		} else {
			wantMissing(t, dst)
		}
	}
}

// TestUploadFailureKeepsOldAndRemovesNew: in one failed request, a new
// file is removed again and an existing one keeps its old content.
func TestUploadFailureKeepsOldAndRemovesNew(t *testing.T) {
	e := newTestEnv(t)
	existing, fresh := e.path("existing.txt"), e.path("fresh.txt")
	writeFile(t, existing, []byte("keep me"), 0o644)
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	w, _ := mw.CreateFormFile("file", fresh)
	w.Write([]byte("new file"))
	w, _ = mw.CreateFormFile("file", existing)
	w.Write([]byte("new content"))
	w, _ = mw.CreateFormFile("file", e.path("third.txt"))
	w.Write(bytes.Repeat([]byte("3"), 1<<20))
	// No closing boundary: the body ends inside the third part.
	resp := e.do(t, http.MethodPost, nil, http.Header{"Content-Type": {mw.FormDataContentType()}}, &buf)
	wantError(t, resp, http.StatusBadRequest)
	wantFile(t, existing, []byte("keep me"))
	wantMissing(t, fresh)
	wantMissing(t, e.path("third.txt"))
	noTemps(t, e.dir)
}
