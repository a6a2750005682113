package client

import (
	"context"
	"net/http"
	"net/url"
)

// SnapshotInfo is a snapshot: a template made of a sandbox's filesystem,
// which Create takes by its ID.
type SnapshotInfo struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

// CreateSnapshot makes a snapshot of a running or paused sandbox, named
// name (empty: by its ID); a name the team used for a snapshot before
// gets a new build of that snapshot.
func (c *Client) CreateSnapshot(ctx context.Context, sandboxID, name string) (SnapshotInfo, error) {
	body := map[string]string{}
	if name != "" {
		body["name"] = name
	}
	var out SnapshotInfo
	_, err := c.do(ctx, http.MethodPost, "/sandboxes/"+url.PathEscape(sandboxID)+"/snapshots", body, &out)
	return out, err
}

// ListSnapshots returns the team's snapshots, newest first: every one, or
// those of sandboxID when it is set.
func (c *Client) ListSnapshots(ctx context.Context, sandboxID string) ([]SnapshotInfo, error) {
	q := url.Values{"limit": {"100"}}
	if sandboxID != "" {
		q.Set("sandboxID", sandboxID)
	}
	var all []SnapshotInfo
	for {
		var page []SnapshotInfo
		hdr, err := c.do(ctx, http.MethodGet, "/snapshots?"+q.Encode(), nil, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		next := hdr.Get("X-Next-Token")
		if next == "" {
			return all, nil
		}
		q.Set("nextToken", next)
	}
}

// DeleteSnapshot removes a snapshot (the template it is).
func (c *Client) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	_, err := c.do(ctx, http.MethodDelete, "/templates/"+url.PathEscape(snapshotID), nil, nil)
	return err
}
