package controlplane

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/runtime"
	"roost.dev/roost/store"
	"roost.dev/roost/wire"
)

// Volumes (docs/persistence.md): E2B's /volumes routes, volumeMounts at
// create, and the volume content API (/volumecontent/{id}/dir|file|path)
// on the same listener. A volume lives on the host that made its image
// (the one the scheduler picked at POST /volumes); sandboxes that mount
// it are placed there, or on another host sharing its volume directory,
// to which it then moves. The store holds the mounts, one writer at a
// time.
//
// A volume's token authenticates its content API, in place of an API
// key: it is an HMAC of the volume's ID under the server's shared key
// (the one that signs template upload URLs, with a label of its own), so
// GET /volumes/{id} can show it again while the store keeps only its
// hash, as it does API keys'. The content API is forwarded to the
// volume's agent, which serves it on its own HTTP surface.

// Bounds of a volume's size (the agent's): E2B's API has no size, so a
// create without roost's sizeMB gets defaultVolumeMB.
const (
	defaultVolumeMB = 1024
	minVolumeMB     = 16
	maxVolumeMB     = 1 << 20
)

// volumeJSON is E2B's Volume; volumeTokenJSON its VolumeAndToken.
type volumeJSON struct {
	VolumeID string `json:"volumeID"`
	Name     string `json:"name"`
}

type volumeTokenJSON struct {
	volumeJSON
	Token string `json:"token"`
}

// newVolumeRequest is E2B's NewVolume with roost's size.
type newVolumeRequest struct {
	Name string `json:"name"`
	// SizeMB is roost's: the volume's size in MiB; 0 means
	// defaultVolumeMB.
	SizeMB int64 `json:"sizeMB"`
}

func (s *Server) volumeRoutes(mux *http.ServeMux, api func(pattern string, h apiHandler)) {
	api("GET /volumes", s.listVolumes)
	api("POST /volumes", s.createVolume)
	api("GET /volumes/{id}", s.getVolume)
	api("DELETE /volumes/{id}", s.deleteVolume)
	// Authenticated by the volume's token, not an API key.
	mux.HandleFunc("GET /volumecontent/{id}/dir", s.volumeContent)
	mux.HandleFunc("POST /volumecontent/{id}/dir", s.volumeContent)
	mux.HandleFunc("GET /volumecontent/{id}/file", s.volumeContent)
	mux.HandleFunc("PUT /volumecontent/{id}/file", s.volumeContent)
	mux.HandleFunc("GET /volumecontent/{id}/path", s.volumeContent)
	mux.HandleFunc("DELETE /volumecontent/{id}/path", s.volumeContent)
	mux.HandleFunc("PATCH /volumecontent/{id}/path", s.volumeContent)
}

// volumeToken is volume id's content token.
func (s *Server) volumeToken(id string) string {
	m := hmac.New(sha256.New, s.filesKey)
	fmt.Fprintf(m, "roost volume token\n%s", id)
	return "vol_" + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (s *Server) volumeView(v store.Volume) volumeTokenJSON {
	return volumeTokenJSON{volumeJSON: volumeJSON{VolumeID: v.ID, Name: v.Name}, Token: s.volumeToken(v.ID)}
}

func (s *Server) listVolumes(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	vs, err := s.store.ListVolumes(r.Context(), key.TeamID)
	if err != nil {
		s.fail(w, r, "list volumes", err)
		return
	}
	out := make([]volumeJSON, 0, len(vs))
	for _, v := range vs {
		out = append(out, volumeJSON{VolumeID: v.ID, Name: v.Name})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getVolume(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	v, err := s.store.GetVolume(r.Context(), key.TeamID, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, "get volume", err)
		return
	}
	writeJSON(w, http.StatusOK, s.volumeView(v))
}

// createVolume is POST /volumes: the scheduler's host makes the image,
// then the store records it. A name the team has is 409 before any
// image is made; a size the host cannot hold is the agent's 400.
func (s *Server) createVolume(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	var req newVolumeRequest
	if err := decodeJSON(r.Body, &req); err != nil {
		s.fail(w, r, "create volume", fmt.Errorf("%w: %w", err, errdefs.ErrInvalid))
		return
	}
	v, err := s.newVolume(r.Context(), key.TeamID, req)
	if err != nil {
		s.fail(w, r, "create volume", err)
		return
	}
	writeJSON(w, http.StatusCreated, s.volumeView(v))
}

func (s *Server) newVolume(ctx context.Context, teamID string, req newVolumeRequest) (store.Volume, error) {
	if err := store.ValidVolumeName(req.Name); err != nil {
		return store.Volume{}, err
	}
	if req.SizeMB == 0 {
		req.SizeMB = defaultVolumeMB
	}
	if req.SizeMB < minVolumeMB || req.SizeMB > maxVolumeMB {
		return store.Volume{}, fmt.Errorf("sizeMB %d: must be between %d and %d: %w", req.SizeMB, minVolumeMB, maxVolumeMB, errdefs.ErrInvalid)
	}
	if _, err := s.store.VolumeByName(ctx, teamID, req.Name); err == nil {
		return store.Volume{}, fmt.Errorf("volume %s exists: %w", req.Name, errdefs.ErrConflict)
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		return store.Volume{}, err
	}
	host, err := s.schedule(ctx)
	if err != nil {
		return store.Volume{}, err
	}
	v := store.Volume{ID: "vol-" + randomString(10), TeamID: teamID, Name: req.Name, SizeMB: req.SizeMB, HostID: host.ID}
	v.TokenHash = store.HashKey(s.volumeToken(v.ID))
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rpcTimeout)
	defer cancel()
	agent := s.agents.For(host)
	_, err = agent.CreateVolume(octx, connect.NewRequest(&hostagentv1.CreateVolumeRequest{VolumeId: v.ID, SizeMb: v.SizeMB}))
	if err != nil {
		return store.Volume{}, errdefs.FromConnect("agent create volume", err)
	}
	if err := s.store.CreateVolume(octx, v); err != nil {
		// A create of the same name won the race: its image stays.
		if _, derr := agent.DeleteVolume(octx, connect.NewRequest(&hostagentv1.DeleteVolumeRequest{VolumeId: v.ID})); derr != nil {
			s.log.Error("volume image left behind", "volume", v.ID, "host", host.ID, "err", derr)
		}
		return store.Volume{}, err
	}
	s.log.Info("volume created", "volume", v.ID, "name", v.Name, "host", host.ID, "size_mb", v.SizeMB)
	return v, nil
}

// deleteVolume is DELETE /volumes/{id}: 409 naming the sandbox while a
// live one mounts it; otherwise its host removes the image, then the
// record goes.
func (s *Server) deleteVolume(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	ctx, cancel := opContext(r.Context())
	defer cancel()
	if err := s.removeVolume(ctx, key.TeamID, r.PathValue("id")); err != nil {
		s.fail(w, r, "delete volume", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) removeVolume(ctx context.Context, teamID, id string) error {
	v, err := s.store.GetVolume(ctx, teamID, id)
	if err != nil {
		return err
	}
	holders, err := s.store.VolumeHolders(ctx, v.ID)
	if err != nil {
		return err
	}
	if len(holders) > 0 {
		return &store.VolumeBusyError{Volume: v.Name, Sandbox: holders[0].SandboxID}
	}
	h, err := s.store.GetHost(ctx, v.HostID)
	if err != nil {
		return fmt.Errorf("host %s of volume %s: %v: %w", v.HostID, v.Name, err, errdefs.ErrUnavailable)
	}
	_, err = s.agents.For(h).DeleteVolume(ctx, connect.NewRequest(&hostagentv1.DeleteVolumeRequest{VolumeId: v.ID}))
	if err = errdefs.FromConnect("agent delete volume", err); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	if err := s.store.DeleteVolume(ctx, teamID, v.ID); err != nil {
		return err
	}
	s.log.Info("volume deleted", "volume", v.ID, "name", v.Name, "host", v.HostID)
	return nil
}

// volumeMountRequest is E2B's SandboxVolumeMount with roost's readOnly.
type volumeMountRequest struct {
	Name     string `json:"name"`
	Path     string `json:"path"`
	ReadOnly bool   `json:"readOnly"`
}

// checkVolumeMounts validates a create's volumeMounts; errdefs.ErrInvalid.
func checkVolumeMounts(ms []volumeMountRequest) error {
	paths := map[string]bool{}
	for _, m := range ms {
		if err := store.ValidVolumeName(m.Name); err != nil {
			return fmt.Errorf("volumeMounts: %w", err)
		}
		if err := runtime.CheckMountPath(m.Path); err != nil {
			return fmt.Errorf("volumeMounts: %w", err)
		}
		if paths[m.Path] {
			return fmt.Errorf("volumeMounts: two volumes at %s: %w", m.Path, errdefs.ErrInvalid)
		}
		paths[m.Path] = true
	}
	return nil
}

// placeVolumes resolves a create's mounts to the team's volumes and the
// host the sandbox runs on: the volumes' host when it is ready and has
// room, else a ready host with room that shares its volume directory
// (docs/persistence.md), to which the volumes move. Volumes of two hosts
// that share no volume directory cannot be mounted together (409). No
// mounts: a zero host.
func (s *Server) placeVolumes(ctx context.Context, teamID string, ms []volumeMountRequest) ([]store.VolumeMount, store.Host, error) {
	if len(ms) == 0 {
		return nil, store.Host{}, nil
	}
	var out []store.VolumeMount
	var vols []store.Volume
	for _, m := range ms {
		v, err := s.store.VolumeByName(ctx, teamID, m.Name)
		if err != nil {
			return nil, store.Host{}, fmt.Errorf("volumeMounts: %w", err)
		}
		vols = append(vols, v)
		out = append(out, store.VolumeMount{VolumeID: v.ID, Path: m.Path, ReadOnly: m.ReadOnly})
	}
	homes, err := s.volumeHomes(ctx, vols)
	if err != nil {
		return nil, store.Host{}, err
	}
	h, err := s.volumeTarget(ctx, homes)
	if err != nil {
		return nil, store.Host{}, err
	}
	for _, v := range vols {
		if v.HostID != h.ID {
			if err := s.moveVolume(ctx, v, homes[v.HostID], h); err != nil {
				return nil, store.Host{}, err
			}
		}
	}
	return out, h, nil
}

// volumeHomes returns the hosts vols are on, by ID, the first volume's
// under "". Hosts that share no volume directory are 409.
func (s *Server) volumeHomes(ctx context.Context, vols []store.Volume) (map[string]store.Host, error) {
	homes := map[string]store.Host{}
	for _, v := range vols {
		h, ok := homes[v.HostID]
		if !ok {
			var err error
			if h, err = s.store.GetHost(ctx, v.HostID); err != nil {
				return nil, fmt.Errorf("host %s of volume %s: %v: %w", v.HostID, v.Name, err, errdefs.ErrUnavailable)
			}
			homes[v.HostID] = h
		}
		first, ok := homes[""]
		if !ok {
			homes[""] = h
			continue
		}
		if h.ID != first.ID && (h.VolumeDirID == "" || h.VolumeDirID != first.VolumeDirID) {
			return nil, fmt.Errorf("volumeMounts: volume %s is on host %s, another of the sandbox's on host %s, and they share no volume directory: %w", v.Name, h.ID, first.ID, errdefs.ErrConflict)
		}
	}
	return homes, nil
}

// volumeTarget picks the host of a sandbox whose volumes are on homes
// (volumeHomes): the first volume's host when it holds them all, is
// ready and has room; else the scheduler's pick among the hosts sharing
// its volume directory; else that host if ready (its agent refuses
// when it is full).
func (s *Server) volumeTarget(ctx context.Context, homes map[string]store.Host) (store.Host, error) {
	first := homes[""]
	if len(homes) == 2 && first.State == store.HostReady {
		n, err := s.activeSandboxes(ctx, first.ID)
		if err != nil {
			return store.Host{}, err
		}
		if first.MaxSandboxes == 0 || n < first.MaxSandboxes {
			return first, nil
		}
	}
	if dir := first.VolumeDirID; dir != "" {
		h, err := s.scheduleWhere(ctx, func(h store.Host) bool { return h.VolumeDirID == dir })
		if err == nil || !errors.Is(err, errdefs.ErrUnavailable) {
			return h, err
		}
	}
	if len(homes) == 2 && first.State == store.HostReady {
		return first, nil
	}
	return store.Host{}, fmt.Errorf("host %s of the sandbox's volumes is %s, and no ready host with room shares its volume directory: %w", first.ID, first.State, errdefs.ErrUnavailable)
}

// moveVolume moves volume v from its host to host to, which shares its
// volume directory: a live sandbox that mounts it is 409 naming it;
// v's host releases it (unmounts it; it refuses while its content API
// uses it), then the store moves it unless a sandbox mounted it
// meanwhile (a compare-and-swap). A host that does not answer cannot
// release it: the volume stays (503), since two hosts mounting one
// image would corrupt it.
func (s *Server) moveVolume(ctx context.Context, v store.Volume, from, to store.Host) error {
	holders, err := s.store.VolumeHolders(ctx, v.ID)
	if err != nil {
		return err
	}
	if len(holders) > 0 {
		return &store.VolumeBusyError{Volume: v.Name, Sandbox: holders[0].SandboxID}
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rpcTimeout)
	defer cancel()
	_, err = s.agents.For(from).ReleaseVolume(rctx, connect.NewRequest(&hostagentv1.ReleaseVolumeRequest{VolumeId: v.ID}))
	if err != nil {
		return fmt.Errorf("move volume %s from host %s to host %s: %w", v.Name, from.ID, to.ID, errdefs.FromConnect("agent release volume", err))
	}
	if err := s.store.MoveVolume(rctx, v.ID, from.ID, to.ID); err != nil {
		return err
	}
	s.log.Info("volume moved", "volume", v.ID, "name", v.Name, "from", from.ID, "to", to.ID)
	return nil
}

// attachVolumes records the sandbox's mounts (one writer per volume);
// on a refusal, the sandbox's record goes again.
func (s *Server) attachVolumes(ctx context.Context, sandboxID string, ms []store.VolumeMount) error {
	for i := range ms {
		ms[i].SandboxID = sandboxID
	}
	err := s.store.AttachVolumes(ctx, sandboxID, ms)
	if err != nil {
		if derr := s.store.DeleteSandbox(context.WithoutCancel(ctx), sandboxID); derr != nil {
			s.log.Error("delete refused sandbox record", "sandbox", sandboxID, "err", derr)
		}
	}
	return err
}

func agentMounts(ms []store.VolumeMount) []*hostagentv1.VolumeMount {
	var out []*hostagentv1.VolumeMount
	for _, m := range ms {
		out = append(out, &hostagentv1.VolumeMount{VolumeId: m.VolumeID, Path: m.Path, ReadOnly: m.ReadOnly})
	}
	return out
}

// volumeContent forwards the volume content API to the volume's agent
// once the volume's token (Authorization: Bearer) checks out. A missing
// or wrong token, or an unknown volume, is 401 alike.
func (s *Server) volumeContent(w http.ResponseWriter, r *http.Request) {
	v, err := s.volumeOfToken(r)
	if err != nil {
		s.fail(w, r, "volume content", err)
		return
	}
	h, err := s.store.GetHost(r.Context(), v.HostID)
	if err == nil && h.State == store.HostDown {
		err = fmt.Errorf("host %s of volume %s is down: %w", h.ID, v.Name, errdefs.ErrUnavailable)
	}
	if err != nil {
		s.fail(w, r, "volume content", fmt.Errorf("host of volume %s: %w", v.Name, err))
		return
	}
	target, err := url.Parse(h.URL)
	if err != nil {
		s.fail(w, r, "volume content", fmt.Errorf("host %s url: %v: %w", h.ID, err, errdefs.ErrUnavailable))
		return
	}
	token := s.agents.token(h.ID)
	rp := &httputil.ReverseProxy{
		Transport: s.agents.transport,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = target.Scheme, target.Host
			pr.Out.URL.Path = "/volumecontent/" + url.PathEscape(v.ID) + "/" + path.Base(r.URL.Path)
			pr.Out.URL.RawPath = ""
			pr.Out.Host = target.Host
			pr.Out.Header.Del("Authorization")
			if token != "" {
				pr.Out.Header.Set(wire.HeaderAgentToken, token)
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.fail(w, r, "volume content", fmt.Errorf("host %s of volume %s: %v: %w", h.ID, v.Name, err, errdefs.ErrUnreachable))
		},
	}
	rp.ServeHTTP(w, r)
}

// volumeOfToken returns the volume the request's path names, if its
// bearer token is the volume's.
func (s *Server) volumeOfToken(r *http.Request) (store.Volume, error) {
	denied := fmt.Errorf("missing or invalid volume token (Authorization: Bearer <the volume's token>): %w", errdefs.ErrUnauthenticated)
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return store.Volume{}, denied
	}
	v, err := s.store.GetVolume(r.Context(), "", r.PathValue("id"))
	if errors.Is(err, errdefs.ErrNotFound) {
		return store.Volume{}, denied
	}
	if err != nil {
		return store.Volume{}, err
	}
	if subtle.ConstantTimeCompare(store.HashKey(tok), v.TokenHash) != 1 {
		return store.Volume{}, denied
	}
	return v, nil
}
