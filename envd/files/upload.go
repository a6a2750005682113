package files

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"

	"roost.dev/roost/envd/filesystem"
	"roost.dev/roost/envd/identity"
)

const (
	mediaOctetStream = "application/octet-stream"
	mediaMultipart   = "multipart/form-data"
	// formField is the multipart field the E2B SDKs put files in.
	formField = "file"
)

// metadataHeader starts the request headers that carry file metadata, as
// the E2B SDKs send it: "X-Metadata-<key>: <value>" stores <value> under
// <key>, lowercased, on every file of the request.
const metadataHeader = "X-Metadata-"

// entry is one written file in the upload response.
type entry struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// upload serves POST. A returned error means nothing has been written to
// the response yet.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request) error {
	u, err := h.user(r)
	if err != nil {
		return err
	}
	rawPath := r.URL.Query().Get("path")
	md, err := requestMetadata(r.Header)
	if err != nil {
		return err
	}

	ct := r.Header.Get("Content-Type")
	mediaType, _, err := mime.ParseMediaType(ct)
	if err == mime.ErrInvalidMediaParameter {
		err = nil // the type is known; a multipart body without a boundary fails below
	}
	if err != nil || (mediaType != mediaOctetStream && mediaType != mediaMultipart) {
		return &requestError{http.StatusUnsupportedMediaType,
			fmt.Sprintf("unsupported content type %q: send multipart/form-data or application/octet-stream", ct)}
	}
	if mediaType == mediaOctetStream && rawPath == "" {
		return badRequest("missing path query parameter: an application/octet-stream upload needs one")
	}

	br := bodyReaders.Get().(*bufio.Reader)
	br.Reset(r.Body)
	defer func() {
		br.Reset(nil)
		bodyReaders.Put(br)
	}()
	body, err := decode(r.Header.Get("Content-Encoding"), br)
	if err != nil {
		return err
	}

	cp := newCopier()
	defer cp.release()
	b := &batch{user: u, cp: cp, metadata: md, log: h.log}
	defer b.abort()
	if mediaType == mediaOctetStream {
		dst, err := u.Resolve(rawPath)
		if err != nil {
			return err
		}
		if err := b.add(dst, body); err != nil {
			return err
		}
	} else {
		orig := r.Body
		r.Body = struct {
			io.Reader
			io.Closer
		}{body, orig}
		err := readForm(r, u, rawPath, b)
		r.Body = orig
		if err != nil {
			return err
		}
	}
	entries, err := b.commit()
	if err != nil {
		return err
	}
	h.log.Debug("files written", "count", len(entries), "user", u.Name)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(entries)
	return nil
}

// requestMetadata collects the X-Metadata-* headers. Keys are lowercased
// (header names are case-insensitive, and HTTP/2 and fetch send them in
// lower case anyway); a header sent twice counts with its first value; an
// empty key is ignored. All as in E2B's envd.
func requestMetadata(h http.Header) (map[string]string, error) {
	var md map[string]string
	for name, values := range h {
		if len(name) < len(metadataHeader) || !strings.EqualFold(name[:len(metadataHeader)], metadataHeader) || len(values) == 0 {
			continue
		}
		key := strings.ToLower(name[len(metadataHeader):])
		if key == "" {
			continue
		}
		if md == nil {
			md = map[string]string{}
		}
		md[key] = values[0]
	}
	if err := filesystem.ValidateMetadata(md); err != nil {
		return nil, badRequest("invalid %s* header: %v", metadataHeader, err)
	}
	return md, nil
}

// readForm stages every part named "file". With a path query parameter the
// form must hold exactly one file, written there (the SDK's write(path,
// data) and upload URLs); without one, each part's filename is its
// destination (write([{path, data}, ...])).
func readForm(r *http.Request, u identity.User, rawPath string, b *batch) error {
	mr, err := r.MultipartReader()
	if err != nil {
		return badRequest("malformed multipart request: %v", err)
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return &bodyError{err: fmt.Errorf("malformed multipart body: %w", err)}
		}
		if part.FormName() != formField {
			if _, err := io.Copy(io.Discard, part); err != nil {
				return &bodyError{err: err}
			}
			continue
		}
		dest := rawPath
		switch {
		case rawPath != "" && len(b.files) > 0:
			return badRequest("the path query parameter names one destination but the form holds several files; omit it and give each part's destination as its filename")
		case rawPath == "":
			dest = partFilename(part)
			if dest == "" {
				return badRequest("a %q part has no filename: give its destination as the filename or in the path query parameter", formField)
			}
		}
		dst, err := u.Resolve(dest)
		if err != nil {
			return err
		}
		if err := b.add(dst, part); err != nil {
			return err
		}
	}
	if len(b.files) == 0 {
		return badRequest("no file in the form: send each file in a multipart part named %q", formField)
	}
	return nil
}

// partFilename is the part's filename parameter as sent. Part.FileName
// would strip it to its base name, but the SDK sends the destination path
// there.
func partFilename(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

// decode undoes the request's Content-Encoding.
func decode(encoding string, body io.Reader) (io.Reader, error) {
	switch {
	case isIdentity(encoding):
		return body, nil
	case isGzip(encoding):
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, &bodyError{err: fmt.Errorf("gunzip: %w", err)}
		}
		return gzipBody{zr}, nil
	}
	return nil, unsupportedEncoding(encoding)
}

// gzipBody names decompression failures as such: a bare "unexpected EOF"
// would not say whether the gzip stream or the connection ended early.
type gzipBody struct{ zr *gzip.Reader }

func (g gzipBody) Read(p []byte) (int, error) {
	n, err := g.zr.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("gunzip: %w", err)
	}
	return n, err
}

func isIdentity(enc string) bool {
	enc = strings.TrimSpace(enc)
	return enc == "" || strings.EqualFold(enc, "identity")
}

func isGzip(enc string) bool {
	enc = strings.TrimSpace(enc)
	return strings.EqualFold(enc, "gzip") || strings.EqualFold(enc, "x-gzip")
}

func unsupportedEncoding(enc string) error {
	return &requestError{http.StatusUnsupportedMediaType,
		fmt.Sprintf("unsupported content encoding %q: send gzip or none", enc)}
}

// bodyReaders buffer request bodies so the multipart and gzip readers,
// which read a few KiB at a time, don't each cost a system call.
var bodyReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 256<<10) }}
