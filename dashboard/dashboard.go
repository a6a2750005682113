package dashboard

import (
	"bytes"
	"compress/gzip"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// dist is what make build wrote to web/dist; a checkout that was never
// built holds only its .gitignore.
//
//go:embed all:web/dist
var dist embed.FS

// AssetPrefix is where the assets are served: /ui/{name}.
const AssetPrefix = "/ui/"

// policy is the page's Content-Security-Policy for a page served on
// host: scripts and styles from the dashboard's own /ui/ only — not from
// elsewhere on its origin, where /proxy/{id}/{port}/ serves what sandboxes
// send — connections to its origin (the API; 'self' covers its
// WebSockets), inline styles for the terminal's and the charts' layout,
// no frames either way.
func policy(host string) string {
	assets := "'self'"
	if validHost(host) {
		assets = host + AssetPrefix
	}
	return "default-src 'none'; script-src " + assets + "; style-src " + assets + " 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self'; " +
		"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// validHost says whether host (the request's Host) can stand in a policy
// as it is: a name or address and a port, nothing that could end a
// directive.
func validHost(host string) bool {
	if host == "" {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return false
		}
	}
	return true
}

// Handler serves the dashboard: GET / and HEAD / the page, GET /ui/{name}
// an asset.
type Handler struct {
	files fs.FS
	// zipped holds the gzip encoding of each asset, made at the first
	// request; the assets never change while the process runs.
	zipOnce sync.Once
	zipped  map[string][]byte
	built   bool
}

// New returns the handler of the embedded dashboard.
func New() *Handler {
	sub, err := fs.Sub(dist, "web/dist")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return newHandler(sub)
}

// newHandler serves the dashboard in files: index.html and the assets
// beside it.
func newHandler(files fs.FS) *Handler {
	_, err := fs.Stat(files, "index.html")
	return &Handler{files: files, built: err == nil}
}

// Built says whether the binary holds a built dashboard.
func (h *Handler) Built() bool { return h.built }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == "/" {
		h.servePage(w, r)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, AssetPrefix)
	if !ok || name == "" || name == "index.html" || strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
		http.NotFound(w, r)
		return
	}
	h.serveAsset(w, r, name)
}

func (h *Handler) servePage(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	if !h.built {
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("This roost binary was built without its dashboard: build it with make build (which runs npm in dashboard/web).\n"))
		return
	}
	page, err := fs.ReadFile(h.files, "index.html")
	if err != nil {
		http.Error(w, "dashboard page unreadable", http.StatusInternalServerError)
		return
	}
	hd.Set("Content-Security-Policy", policy(r.Host))
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(page))
}

// serveAsset serves a fingerprinted asset (its name changes with its
// content), so browsers may keep it for good; gzipped where the browser
// takes it.
func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	body, err := fs.ReadFile(h.files, name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Cache-Control", "public, max-age=31536000, immutable")
	hd.Add("Vary", "Accept-Encoding")
	if ctype := contentType(name); ctype != "" {
		hd.Set("Content-Type", ctype)
	}
	if z := h.gzipOf(name); z != nil && acceptsGzip(r) {
		hd.Set("Content-Encoding", "gzip")
		body = z
	}
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(body))
}

func contentType(name string) string {
	switch path.Ext(name) {
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".txt":
		return "text/plain; charset=utf-8"
	}
	return ""
}

func acceptsGzip(r *http.Request) bool {
	for part := range strings.SplitSeq(r.Header.Get("Accept-Encoding"), ",") {
		enc, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if enc == "gzip" {
			return true
		}
	}
	return false
}

// gzipOf is the gzip encoding of the asset name, or nil.
func (h *Handler) gzipOf(name string) []byte {
	h.zipOnce.Do(func() {
		h.zipped = map[string][]byte{}
		entries, _ := fs.ReadDir(h.files, ".")
		for _, e := range entries {
			if e.IsDir() || contentType(e.Name()) == "" {
				continue
			}
			raw, err := fs.ReadFile(h.files, e.Name())
			if err != nil {
				continue
			}
			var b bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
			_, _ = zw.Write(raw)
			_ = zw.Close()
			h.zipped[e.Name()] = b.Bytes()
		}
	})
	return h.zipped[name]
}
