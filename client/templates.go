package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// TemplateBuild names a build the API made for a template.
type TemplateBuild struct {
	TemplateID string   `json:"templateID"`
	BuildID    string   `json:"buildID"`
	Public     bool     `json:"public"`
	Names      []string `json:"names"`
	Tags       []string `json:"tags"`
}

// NewTemplateOptions describe a template build to make. Zero values take
// the server's defaults.
type NewTemplateOptions struct {
	// Name is "name" or "name:tag".
	Name     string   `json:"name"`
	Tags     []string `json:"tags,omitempty"`
	CPUCount int      `json:"cpuCount,omitempty"`
	MemoryMB int      `json:"memoryMB,omitempty"`
}

// NewTemplate makes a template of that name (or a new build of the
// team's template of that name), its build waiting for StartBuild.
func (c *Client) NewTemplate(ctx context.Context, o NewTemplateOptions) (TemplateBuild, error) {
	var b TemplateBuild
	_, err := c.do(ctx, http.MethodPost, "/v3/templates", o, &b)
	return b, err
}

// FileUpload says where to upload a build's file, unless the server has
// it already.
type FileUpload struct {
	Present bool   `json:"present"`
	URL     string `json:"url,omitempty"`
}

// TemplateFile asks whether the server has the file whose sha256 is hash
// (hex), for builds of the template, and where to upload it if not.
func (c *Client) TemplateFile(ctx context.Context, templateID, hash string) (FileUpload, error) {
	var f FileUpload
	_, err := c.do(ctx, http.MethodGet, "/templates/"+url.PathEscape(templateID)+"/files/"+url.PathEscape(hash), nil, &f)
	return f, err
}

// UploadTemplateFile puts size bytes from r to the URL TemplateFile gave.
func (c *Client) UploadTemplateFile(ctx context.Context, uploadURL string, r io.Reader, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, uploadURL, r)
	if err != nil {
		return err
	}
	req.ContentLength = size
	c.authenticate(req)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return readError(resp)
	}
	return nil
}

// StartBuild starts a build made by NewTemplate; spec is roost's build
// spec (template/build.Spec), sent as JSON. The build runs in the
// background: follow it with BuildStatus.
func (c *Client) StartBuild(ctx context.Context, templateID, buildID string, spec any) error {
	_, err := c.do(ctx, http.MethodPost, "/v1/templates/"+url.PathEscape(templateID)+"/builds/"+url.PathEscape(buildID), spec, nil)
	return err
}

// BuildLogEntry is one line of a build's log.
type BuildLogEntry struct {
	Time    time.Time `json:"timestamp"`
	Level   string    `json:"level"`
	Message string    `json:"message"`
	Step    string    `json:"step,omitempty"`
}

// BuildStatus is where a build is, with the log entries from the offset
// asked for on.
type BuildStatus struct {
	TemplateID string          `json:"templateID"`
	BuildID    string          `json:"buildID"`
	Status     string          `json:"status"` // waiting, building, ready, error
	LogEntries []BuildLogEntry `json:"logEntries"`
	Reason     *BuildReason    `json:"reason,omitempty"`
}

// BuildReason says why a build failed.
type BuildReason struct {
	Message    string          `json:"message"`
	Step       string          `json:"step,omitempty"`
	LogEntries []BuildLogEntry `json:"logEntries,omitempty"`
}

// Build states.
const (
	BuildWaiting  = "waiting"
	BuildBuilding = "building"
	BuildReady    = "ready"
	BuildError    = "error"
)

// BuildStatus returns a build's state and its log entries from
// logsOffset on.
func (c *Client) BuildStatus(ctx context.Context, templateID, buildID string, logsOffset int) (BuildStatus, error) {
	var s BuildStatus
	path := "/templates/" + url.PathEscape(templateID) + "/builds/" + url.PathEscape(buildID) + "/status?logsOffset=" + strconv.Itoa(logsOffset)
	_, err := c.do(ctx, http.MethodGet, path, nil, &s)
	return s, err
}

// TemplateInfo is a template as roost's list describes it: the team's
// and public templates, and the hosts' own trees (such as base).
type TemplateInfo struct {
	TemplateID string    `json:"templateID"`
	Name       string    `json:"name"`
	Names      []string  `json:"names"`
	Tags       []string  `json:"tags"`
	Public     bool      `json:"public"`
	BuildID    string    `json:"buildID"`
	Status     string    `json:"status"`
	Digest     string    `json:"digest"`
	SizeBytes  int64     `json:"sizeBytes"`
	Hosts      []string  `json:"hosts"`
	Source     string    `json:"source"`
	Progress   string    `json:"progress,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Templates lists the templates the key can use.
func (c *Client) Templates(ctx context.Context) ([]TemplateInfo, error) {
	var ts []TemplateInfo
	_, err := c.do(ctx, http.MethodGet, "/v1/templates", nil, &ts)
	return ts, err
}

// DeleteTemplate deletes a template of the team, by ID or name.
func (c *Client) DeleteTemplate(ctx context.Context, idOrName string) error {
	_, err := c.do(ctx, http.MethodDelete, "/templates/"+url.PathEscape(idOrName), nil, nil)
	if err != nil {
		return fmt.Errorf("delete template %s: %w", idOrName, err)
	}
	return nil
}
