package agent

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
	"roost.dev/roost/runtime"
)

// service is the HostAgentService Connect service over a Manager: conversion
// between wire and Go types, and error codes, nothing more.
type service struct {
	m *Manager
}

var _ hostagentv1connect.HostAgentServiceHandler = (*service)(nil)

func (s *service) CreateSandbox(ctx context.Context, req *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	r := req.Msg
	var ref *TemplateRef
	if tr := r.GetTemplateRef(); tr != nil {
		d, err := DecodeTemplateRef(tr.GetDigest(), tr.GetManifest())
		if err != nil {
			return nil, errdefs.ToConnect(err)
		}
		ref = &d
	}
	sb, err := s.m.Create(ctx, CreateRequest{
		TemplateRef:         ref,
		ID:                  r.GetSandboxId(),
		Template:            r.GetTemplate(),
		Limits:              runtime.Limits{VCPUs: int(r.GetVcpus()), MemoryMB: int(r.GetMemoryMb()), DiskMB: int(r.GetDiskMb())},
		Timeout:             seconds(r.GetTimeoutSeconds()),
		EnvVars:             r.GetEnvVars(),
		Metadata:            r.GetMetadata(),
		DenyInternet:        r.AllowInternet != nil && !r.GetAllowInternet(),
		AutoPause:           r.GetAutoPause(),
		AutoPauseFilesystem: r.GetAutoPauseFilesystemOnly(),
		EnvdToken:           r.GetEnvdAccessToken(),
		Volumes:             volumeRequests(r.GetVolumeMounts()),
		Owner:               r.GetOwner(),
	})
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.CreateSandboxResponse{Sandbox: toProto(sb)}), nil
}

func (s *service) ForkSandbox(ctx context.Context, req *connect.Request[hostagentv1.ForkSandboxRequest]) (*connect.Response[hostagentv1.ForkSandboxResponse], error) {
	forks := make([]CreateRequest, len(req.Msg.GetForks()))
	for i, f := range req.Msg.GetForks() {
		forks[i] = CreateRequest{
			ID: f.GetSandboxId(), Timeout: seconds(f.GetTimeoutSeconds()), Metadata: f.GetMetadata(),
			EnvdToken: f.GetEnvdAccessToken(), AutoPause: f.GetAutoPause(),
		}
	}
	outs, err := s.m.Fork(ctx, req.Msg.GetSandboxId(), forks)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	resp := &hostagentv1.ForkSandboxResponse{Results: make([]*hostagentv1.ForkResult, len(outs))}
	for i, o := range outs {
		if o.Err != nil {
			resp.Results[i] = &hostagentv1.ForkResult{ErrorCode: connect.CodeOf(errdefs.ToConnect(o.Err)).String(), Error: o.Err.Error()}
			continue
		}
		resp.Results[i] = &hostagentv1.ForkResult{Sandbox: toProto(o.Sandbox)}
	}
	return connect.NewResponse(resp), nil
}

func (s *service) DestroySandbox(ctx context.Context, req *connect.Request[hostagentv1.DestroySandboxRequest]) (*connect.Response[hostagentv1.DestroySandboxResponse], error) {
	if err := s.m.StartDestroy(ctx, req.Msg.GetSandboxId()); err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.DestroySandboxResponse{}), nil
}

func (s *service) PauseSandbox(ctx context.Context, req *connect.Request[hostagentv1.PauseSandboxRequest]) (*connect.Response[hostagentv1.PauseSandboxResponse], error) {
	pause := s.m.Pause
	switch {
	case req.Msg.GetHibernate() && req.Msg.GetFilesystemOnly():
		return nil, errdefs.ToConnect(fmt.Errorf("hibernate keeps a sandbox's memory, filesystem_only does not: ask for one: %w", errdefs.ErrInvalid))
	case req.Msg.GetHibernate():
		pause = s.m.Hibernate
	case req.Msg.GetFilesystemOnly():
		pause = s.m.Halt
	case req.Msg.GetPreferHibernate():
		pause = s.m.PauseToDisk
	}
	sb, err := pause(ctx, req.Msg.GetSandboxId())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.PauseSandboxResponse{Sandbox: toProto(sb)}), nil
}

func (s *service) ResumeSandbox(ctx context.Context, req *connect.Request[hostagentv1.ResumeSandboxRequest]) (*connect.Response[hostagentv1.ResumeSandboxResponse], error) {
	var timeout time.Duration
	if req.Msg.TimeoutSeconds != nil {
		timeout = seconds(req.Msg.GetTimeoutSeconds())
		if timeout == 0 {
			return nil, errdefs.ToConnect(checkTimeout(0))
		}
	}
	sb, err := s.m.Resume(ctx, req.Msg.GetSandboxId(), timeout, req.Msg.GetAuto())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.ResumeSandboxResponse{Sandbox: toProto(sb)}), nil
}

func (s *service) ListSandboxes(ctx context.Context, req *connect.Request[hostagentv1.ListSandboxesRequest]) (*connect.Response[hostagentv1.ListSandboxesResponse], error) {
	var states []State
	for _, st := range req.Msg.GetStates() {
		state, ok := fromProtoState[st]
		if !ok {
			return nil, errdefs.ToConnect(fmt.Errorf("state %s: %w", st, errdefs.ErrInvalid))
		}
		states = append(states, state)
	}
	out := &hostagentv1.ListSandboxesResponse{}
	for _, sb := range s.m.List(states...) {
		p := toProto(sb)
		if req.Msg.GetWithDiskUsage() {
			p.DiskBytes = s.m.DiskUsage(sb.ID)
		}
		out.Sandboxes = append(out.Sandboxes, p)
	}
	return connect.NewResponse(out), nil
}

func (s *service) GetSandbox(ctx context.Context, req *connect.Request[hostagentv1.GetSandboxRequest]) (*connect.Response[hostagentv1.GetSandboxResponse], error) {
	sb, err := s.m.Get(req.Msg.GetSandboxId())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	p := toProto(sb)
	p.DiskBytes = s.m.DiskUsage(sb.ID)
	return connect.NewResponse(&hostagentv1.GetSandboxResponse{Sandbox: p}), nil
}

func (s *service) SetTimeout(ctx context.Context, req *connect.Request[hostagentv1.SetTimeoutRequest]) (*connect.Response[hostagentv1.SetTimeoutResponse], error) {
	sb, err := s.m.SetTimeout(req.Msg.GetSandboxId(), seconds(req.Msg.GetTimeoutSeconds()))
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	return connect.NewResponse(&hostagentv1.SetTimeoutResponse{Sandbox: toProto(sb)}), nil
}

func (s *service) GetHostInfo(ctx context.Context, req *connect.Request[hostagentv1.GetHostInfoRequest]) (*connect.Response[hostagentv1.GetHostInfoResponse], error) {
	h := s.m.HostInfo(ctx)
	return connect.NewResponse(&hostagentv1.GetHostInfoResponse{Host: &hostagentv1.HostInfo{
		Hostname: h.Hostname,
		Runtime:  h.Runtime,
		Capabilities: &hostagentv1.Capabilities{
			Pause: h.Capabilities.Pause, Snapshot: h.Capabilities.Snapshot, Vm: h.Capabilities.VM, Fork: h.Capabilities.Fork,
		},
		Probe: &hostagentv1.Probe{Available: h.Probe.Available, Reason: h.Probe.Reason},
		Capacity: &hostagentv1.Capacity{
			Cpus: int32(h.CPUs), MemoryMb: h.MemoryMB, MaxSandboxes: int32(h.MaxSandboxes),
		},
		Usage: &hostagentv1.Usage{
			Sandboxes: int32(h.Usage.Sandboxes), Running: int32(h.Usage.Running), Paused: int32(h.Usage.Paused),
			Vcpus: int32(h.Usage.VCPUs), MemoryMb: h.Usage.MemoryMB, DiskMb: h.Usage.DiskMB,
		},
		Versions:    &hostagentv1.Versions{Roost: h.Version, Envd: h.EnvdVersion, Kernel: h.Kernel},
		StartedAt:   timestamppb.New(h.Started),
		VolumeDirId: h.VolumeDirID,
	}}), nil
}

func (s *service) ListTemplates(ctx context.Context, req *connect.Request[hostagentv1.ListTemplatesRequest]) (*connect.Response[hostagentv1.ListTemplatesResponse], error) {
	ts, err := s.m.Templates()
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	out := &hostagentv1.ListTemplatesResponse{}
	def := s.m.DefaultLimits()
	limits := &hostagentv1.Limits{Vcpus: int32(def.VCPUs), MemoryMb: int32(def.MemoryMB), DiskMb: int32(def.DiskMB)}
	for _, t := range ts {
		out.Templates = append(out.Templates, &hostagentv1.Template{
			Name: t.Name, Source: t.Source, SizeBytes: t.SizeBytes, Created: timestamppb.New(t.Created),
			DefaultUser: t.DefaultUser, Workdir: t.Workdir, DefaultLimits: limits, EnvdVersion: s.m.EnvdVersion(),
			Digest: string(t.Manifest),
		})
	}
	for _, p := range s.m.TemplatesInProgress() {
		out.InProgress = append(out.InProgress, &hostagentv1.TemplateInProgress{Name: p.Name, Digest: string(p.Digest), Progress: p.Progress})
	}
	return connect.NewResponse(out), nil
}

func (s *service) GetSandboxLogs(ctx context.Context, req *connect.Request[hostagentv1.GetSandboxLogsRequest]) (*connect.Response[hostagentv1.GetSandboxLogsResponse], error) {
	q, err := logQuery(req.Msg)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	entries, err := s.m.Logs(req.Msg.GetSandboxId(), q)
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	out := &hostagentv1.GetSandboxLogsResponse{Entries: make([]*hostagentv1.LogEntry, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, &hostagentv1.LogEntry{
			Time: timestamppb.New(e.Time), Level: toProtoLevel[e.Level], Message: e.Message, Fields: e.Fields,
		})
	}
	return connect.NewResponse(out), nil
}

// logQuery reads a logs request; values outside the enums wrap
// errdefs.ErrInvalid.
func logQuery(r *hostagentv1.GetSandboxLogsRequest) (LogQuery, error) {
	q := LogQuery{Limit: DefaultLogLimit, Search: r.GetSearch()}
	if r.Limit != nil {
		q.Limit = int(r.GetLimit())
	}
	if r.Cursor != nil {
		if err := r.GetCursor().CheckValid(); err != nil {
			return LogQuery{}, fmt.Errorf("log cursor: %v: %w", err, errdefs.ErrInvalid)
		}
		q.Cursor = r.GetCursor().AsTime()
	}
	switch r.GetDirection() {
	case hostagentv1.LogDirection_LOG_DIRECTION_UNSPECIFIED, hostagentv1.LogDirection_LOG_DIRECTION_FORWARD:
	case hostagentv1.LogDirection_LOG_DIRECTION_BACKWARD:
		q.Backward = true
	default:
		return LogQuery{}, fmt.Errorf("log direction %s: %w", r.GetDirection(), errdefs.ErrInvalid)
	}
	level, ok := fromProtoLevel[r.GetMinLevel()]
	if !ok {
		return LogQuery{}, fmt.Errorf("log level %s: %w", r.GetMinLevel(), errdefs.ErrInvalid)
	}
	q.MinLevel = level
	return q, nil
}

var toProtoLevel = map[LogLevel]hostagentv1.LogLevel{
	LogDebug: hostagentv1.LogLevel_LOG_LEVEL_DEBUG,
	LogInfo:  hostagentv1.LogLevel_LOG_LEVEL_INFO,
	LogWarn:  hostagentv1.LogLevel_LOG_LEVEL_WARN,
	LogError: hostagentv1.LogLevel_LOG_LEVEL_ERROR,
}

// fromProtoLevel maps a level filter; unspecified keeps every entry.
var fromProtoLevel = func() map[hostagentv1.LogLevel]LogLevel {
	m := map[hostagentv1.LogLevel]LogLevel{hostagentv1.LogLevel_LOG_LEVEL_UNSPECIFIED: 0}
	for k, v := range toProtoLevel {
		m[v] = k
	}
	return m
}()

// seconds converts a wire timeout, saturating rather than overflowing.
func seconds(n int64) time.Duration {
	const maxSeconds = int64(1<<63-1) / int64(time.Second)
	if n > maxSeconds {
		n = maxSeconds
	}
	if n < -maxSeconds {
		n = -maxSeconds
	}
	return time.Duration(n) * time.Second
}

var toProtoState = map[State]hostagentv1.SandboxState{
	StateStarting: hostagentv1.SandboxState_SANDBOX_STATE_STARTING,
	StateRunning:  hostagentv1.SandboxState_SANDBOX_STATE_RUNNING,
	StatePaused:   hostagentv1.SandboxState_SANDBOX_STATE_PAUSED,
	StateStopped:  hostagentv1.SandboxState_SANDBOX_STATE_STOPPED,
	StateError:    hostagentv1.SandboxState_SANDBOX_STATE_ERROR,
}

var fromProtoState = func() map[hostagentv1.SandboxState]State {
	m := map[hostagentv1.SandboxState]State{}
	for k, v := range toProtoState {
		m[v] = k
	}
	return m
}()

func toProto(sb Sandbox) *hostagentv1.Sandbox {
	out := &hostagentv1.Sandbox{
		SandboxId: sb.ID,
		Template:  sb.Template,
		State:     toProtoState[sb.State],
		Limits: &hostagentv1.Limits{
			Vcpus: int32(sb.Limits.VCPUs), MemoryMb: int32(sb.Limits.MemoryMB), DiskMb: int32(sb.Limits.DiskMB),
		},
		Metadata:      sb.Metadata,
		StartedAt:     timestamppb.New(sb.Started),
		Error:         sb.Error,
		AllowInternet: sb.Internet,
		AutoPause:     sb.AutoPause,
		Hibernated:    sb.Hibernated,
		Halted:        sb.Halted,
		PauseNote:     sb.PauseNote,
	}
	if !sb.EndAt.IsZero() {
		out.EndAt = timestamppb.New(sb.EndAt)
	}
	if sb.Envd.IsValid() {
		out.EnvdAddress = sb.Envd.String()
	}
	return out
}

func (s *service) SnapshotSandbox(ctx context.Context, req *connect.Request[hostagentv1.SnapshotSandboxRequest]) (*connect.Response[hostagentv1.SnapshotSandboxResponse], error) {
	man, d, err := s.m.Snapshot(ctx, req.Msg.GetSandboxId(), req.Msg.GetEnvVars())
	if err != nil {
		return nil, errdefs.ToConnect(err)
	}
	b, _ := man.Encode()
	return connect.NewResponse(&hostagentv1.SnapshotSandboxResponse{Template: &hostagentv1.TemplateRef{Digest: string(d), Manifest: b}}), nil
}
