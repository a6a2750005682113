package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Volume is a team's volume (E2B's VolumeAndToken): Token authenticates
// its content API.
type Volume struct {
	ID    string `json:"volumeID"`
	Name  string `json:"name"`
	Token string `json:"token,omitempty"`
}

// VolumeEntry is a file or directory of a volume (E2B's VolumeEntryStat).
type VolumeEntry struct {
	Name   string    `json:"name"`
	Type   string    `json:"type"` // file, directory, symlink or unknown
	Path   string    `json:"path"`
	Size   int64     `json:"size"`
	Mode   uint32    `json:"mode"`
	UID    uint32    `json:"uid"`
	GID    uint32    `json:"gid"`
	Atime  time.Time `json:"atime"`
	Mtime  time.Time `json:"mtime"`
	Ctime  time.Time `json:"ctime"`
	Target string    `json:"target,omitempty"`
}

// CreateVolume makes a volume of sizeMB MiB (0: the server's default).
func (c *Client) CreateVolume(ctx context.Context, name string, sizeMB int64) (Volume, error) {
	var v Volume
	body := map[string]any{"name": name}
	if sizeMB > 0 {
		body["sizeMB"] = sizeMB
	}
	_, err := c.do(ctx, http.MethodPost, "/volumes", body, &v)
	return v, err
}

// Volumes lists the team's volumes, without their tokens.
func (c *Client) Volumes(ctx context.Context) ([]Volume, error) {
	var vs []Volume
	_, err := c.do(ctx, http.MethodGet, "/volumes", nil, &vs)
	return vs, err
}

// GetVolume returns a volume with its token.
func (c *Client) GetVolume(ctx context.Context, id string) (Volume, error) {
	var v Volume
	_, err := c.do(ctx, http.MethodGet, "/volumes/"+url.PathEscape(id), nil, &v)
	return v, err
}

// VolumeByName returns the team's volume of that name, with its token;
// an *Error of status 404 when there is none.
func (c *Client) VolumeByName(ctx context.Context, name string) (Volume, error) {
	vs, err := c.Volumes(ctx)
	if err != nil {
		return Volume{}, err
	}
	for _, v := range vs {
		if v.Name == name {
			return c.GetVolume(ctx, v.ID)
		}
	}
	return Volume{}, &Error{Status: http.StatusNotFound, Message: fmt.Sprintf("no volume named %q", name)}
}

// DeleteVolume deletes a volume that no live sandbox mounts.
func (c *Client) DeleteVolume(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/volumes/"+url.PathEscape(id), nil, nil)
	return err
}

// ListVolume lists the directory p of v, depth levels deep (0: 1).
func (c *Client) ListVolume(ctx context.Context, v Volume, p string, depth int) ([]VolumeEntry, error) {
	q := url.Values{"path": {p}}
	if depth > 0 {
		q.Set("depth", strconv.Itoa(depth))
	}
	var out []VolumeEntry
	err := c.volumeCall(ctx, v, http.MethodGet, "dir", q, nil, func(r io.Reader) error { return json.NewDecoder(r).Decode(&out) })
	return out, err
}

// ReadVolumeFile copies the file p of v to w.
func (c *Client) ReadVolumeFile(ctx context.Context, v Volume, p string, w io.Writer) error {
	return c.volumeCall(ctx, v, http.MethodGet, "file", url.Values{"path": {p}}, nil, func(r io.Reader) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// WriteVolumeFile writes r to the file p of v, replacing one that exists
// when force is set.
func (c *Client) WriteVolumeFile(ctx context.Context, v Volume, p string, r io.Reader, force bool) (VolumeEntry, error) {
	q := url.Values{"path": {p}}
	if force {
		q.Set("force", "true")
	}
	var e VolumeEntry
	err := c.volumeCall(ctx, v, http.MethodPut, "file", q, r, func(r io.Reader) error { return json.NewDecoder(r).Decode(&e) })
	return e, err
}

// volumeCall sends one request of the volume content API with v's token;
// read, when non-nil, reads a successful answer's body.
func (c *Client) volumeCall(ctx context.Context, v Volume, method, op string, q url.Values, body io.Reader, read func(io.Reader) error) error {
	u := c.baseURL + "/volumecontent/" + url.PathEscape(v.ID) + "/" + op + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+v.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readError(resp)
	}
	if read != nil {
		return read(resp.Body)
	}
	return nil
}

// VolumeMount mounts a volume in a new sandbox (E2B's SandboxVolumeMount
// with roost's readOnly).
type VolumeMount struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}
