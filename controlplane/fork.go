package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// E2B's fork defaults and bounds (SandboxForkRequest).
const (
	defaultForkTimeout = 15 * time.Second
	maxForkCount       = 100
)

// forkRequest is E2B's SandboxForkRequest.
type forkRequest struct {
	Timeout *int64 `json:"timeout"`
	Count   *int64 `json:"count"`
}

// forkResultJSON is E2B's SandboxForkResult: exactly one of Sandbox and
// Error.
type forkResultJSON struct {
	Sandbox *sandboxJSON  `json:"sandbox,omitempty"`
	Error   *errdefs.Body `json:"error,omitempty"`
}

// parseFork decodes a fork request: an empty body is one fork that lives
// 15 s, as E2B's defaults say.
func parseFork(body io.Reader) (count int, timeout time.Duration, err error) {
	var req forkRequest
	if err := decodeJSON(body, &req); err != nil && !errors.Is(err, io.EOF) {
		return 0, 0, err
	}
	count = 1
	if req.Count != nil {
		if *req.Count < 1 || *req.Count > maxForkCount {
			return 0, 0, fmt.Errorf("count %d: must be between 1 and %d: %w", *req.Count, maxForkCount, errdefs.ErrInvalid)
		}
		count = int(*req.Count)
	}
	timeout, err = parseTimeout(req.Timeout, defaultForkTimeout)
	return count, timeout, err
}

// forkSandbox is POST /sandboxes/{id}/fork: the sandbox is captured once
// on its host and each fork starts from the capture there, with its own
// record, tokens and timeout and the sandbox's template, sizes, metadata
// and settings. Each fork succeeds or fails on its own (a quota reached,
// the host full); the answer lists every outcome in order.
func (s *Server) forkSandbox(w http.ResponseWriter, r *http.Request, key store.APIKey) {
	count, timeout, err := parseFork(r.Body)
	if err != nil {
		s.fail(w, r, "fork sandbox", err)
		return
	}
	ctx := r.Context()
	src, err := s.teamSandbox(r, key)
	if err == nil {
		err = s.checkTimeout(ctx, key.TeamID, timeout)
	}
	if err == nil && src.State != store.SandboxRunning {
		err = fmt.Errorf("sandbox %s is %s: only a running sandbox can be forked: %w", src.ID, src.State, errdefs.ErrConflict)
	}
	var host store.Host
	if err == nil {
		host, err = s.hostOf(ctx, src)
	}
	if c, ok := hostCapabilities(host); err == nil && ok && !c.Fork {
		err = fmt.Errorf("sandbox %s runs on the %s runtime: fork is not supported there, as it cannot capture a sandbox's memory and processes: %w",
			src.ID, host.Runtime, errdefs.ErrUnsupported)
	}
	if err != nil {
		s.fail(w, r, "fork sandbox", err)
		return
	}
	results := make([]forkResultJSON, count)
	var forks []store.Sandbox
	var at []int // the result each of forks fills
	for i := range count {
		sb := forkRecord(src, s.store.Now().Add(timeout), timeout)
		if err := s.store.CreateSandboxWithin(ctx, sb, s.cfg.TeamQuota); err != nil {
			results[i].Error = s.errorBody("fork sandbox", err)
			continue
		}
		forks, at = append(forks, sb), append(at, i)
	}
	if len(forks) > 0 {
		if err := s.startForks(ctx, src, host, forks, at, results); err != nil {
			s.fail(w, r, "fork sandbox", err)
			return
		}
	}
	writeJSON(w, http.StatusCreated, results)
}

// forkRecord is the starting record of a fork of src, ending at end.
func forkRecord(src store.Sandbox, end time.Time, timeout time.Duration) store.Sandbox {
	sb := store.Sandbox{
		ID: newSandboxID(), TeamID: src.TeamID, HostID: src.HostID, TemplateID: src.TemplateID, Alias: src.Alias, ClientID: src.HostID,
		State: store.SandboxStarting, Metadata: src.Metadata, EnvVars: src.EnvVars, EnvdVersion: envdVersion,
		TrafficAccessToken: newToken(), AllowPublicTraffic: src.AllowPublicTraffic, AllowInternet: src.AllowInternet,
		AutoPause: src.AutoPause, AutoResume: src.AutoResume, TimeoutSecs: int64(timeout / time.Second), EndAt: end,
		VCPUs: src.VCPUs, MemoryMB: src.MemoryMB, DiskMB: src.DiskMB,
	}
	if src.EnvdAccessToken != "" {
		sb.EnvdAccessToken = newToken()
	}
	return sb
}

// startForks has src's host fork it into the starting records forks, and
// fills results[at[i]] with each one's outcome: the running record, or
// the error (its record gone). An error of the whole call removes every
// record.
func (s *Server) startForks(ctx context.Context, src store.Sandbox, host store.Host, forks []store.Sandbox, at []int, results []forkResultJSON) error {
	// The agent call and what follows must finish even if the client
	// goes: otherwise forks run with records stuck in starting.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), createTimeout)
	defer cancel()
	req := &hostagentv1.ForkSandboxRequest{SandboxId: src.ID}
	for _, sb := range forks {
		req.Forks = append(req.Forks, &hostagentv1.Fork{SandboxId: sb.ID, TimeoutSeconds: sb.TimeoutSecs, Metadata: sb.Metadata,
			EnvdAccessToken: sb.EnvdAccessToken, AutoPause: sb.AutoPause})
	}
	resp, err := s.agents.For(host).ForkSandbox(octx, connect.NewRequest(req))
	if err == nil && len(resp.Msg.GetResults()) != len(forks) {
		err = fmt.Errorf("agent answered %d fork results for %d forks", len(resp.Msg.GetResults()), len(forks))
	}
	if err != nil {
		for _, sb := range forks {
			s.dropRecord(octx, sb.ID)
		}
		return errdefs.FromConnect("agent fork sandbox", err)
	}
	for i, res := range resp.Msg.GetResults() {
		var ferr error
		if res.GetErrorCode() != "" {
			var code connect.Code
			if uerr := code.UnmarshalText([]byte(res.GetErrorCode())); uerr != nil {
				code = connect.CodeUnknown
			}
			ferr = errdefs.FromConnect("agent fork", connect.NewError(code, errors.New(res.GetError())))
		}
		sb, err := s.forkStarted(octx, forks[i].ID, res.GetSandbox(), ferr)
		if err != nil {
			results[at[i]].Error = s.errorBody("fork sandbox", err)
			continue
		}
		view := s.sandboxView(sb)
		results[at[i]].Sandbox = &view
	}
	return nil
}

// forkStarted records one fork's outcome: running, with what the agent
// reports, or gone with ferr.
func (s *Server) forkStarted(ctx context.Context, id string, got *hostagentv1.Sandbox, ferr error) (store.Sandbox, error) {
	if ferr != nil {
		s.dropRecord(ctx, id)
		return store.Sandbox{}, ferr
	}
	sb, err := s.store.UpdateSandbox(ctx, id, func(cur *store.Sandbox) error {
		if cur.State != store.SandboxStarting {
			return fmt.Errorf("sandbox %s became %s while starting: %w", cur.ID, cur.State, errdefs.ErrConflict)
		}
		cur.State, cur.StartedAt = store.SandboxRunning, s.store.Now()
		if ts := got.GetStartedAt(); ts != nil {
			cur.StartedAt = ts.AsTime().UTC()
		}
		return nil
	})
	if err == nil {
		s.emit(sb, store.EventCreated, reasonFork)
		s.log.Info("sandbox forked", "sandbox", id, "host", sb.HostID)
	}
	return sb, err
}

// dropRecord removes the record of a sandbox that did not start.
func (s *Server) dropRecord(ctx context.Context, id string) {
	if err := s.store.DeleteSandbox(ctx, id); err != nil {
		s.log.Error("delete failed sandbox record", "sandbox", id, "err", err)
	}
}
