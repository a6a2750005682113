package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
)

// directAgent is the client of the agent in this process (roost up): a
// unary call is a call of the agent's service, in the caller's
// goroutine, with no HTTP request, no encoding and no loopback hops
// between (about a millisecond of every create on a 2-core host). It
// keeps what the wire guarantees: each side gets its own copy of the
// messages, errors arrive as Connect errors, and a panic in the agent is
// an Internal error, not the process's end. The streaming call
// (BuildTemplate) goes over HTTP, as for any agent.
type directAgent struct {
	hostagentv1connect.HostAgentServiceClient // over HTTP: BuildTemplate
	svc                                       hostagentv1connect.HostAgentServiceHandler
	log                                       *slog.Logger
}

// direct calls h with a copy of req's message and headers, and returns a
// copy of its answer.
func direct[Req, Res any](ctx context.Context, log *slog.Logger, req *connect.Request[Req],
	h func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) (resp *connect.Response[Res], err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("in-process agent panicked", "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, connect.NewError(connect.CodeInternal, fmt.Errorf("agent panicked: %v", r))
		}
	}()
	in := connect.NewRequest(cloneMsg(req.Msg))
	for k, v := range req.Header() {
		in.Header()[k] = append([]string(nil), v...)
	}
	out, err := h(ctx, in)
	if err != nil {
		var ce *connect.Error
		if !errors.As(err, &ce) {
			err = connect.NewError(connect.CodeUnknown, err)
		}
		return nil, err
	}
	resp = connect.NewResponse(cloneMsg(out.Msg))
	for k, v := range out.Header() {
		resp.Header()[k] = append([]string(nil), v...)
	}
	return resp, nil
}

// cloneMsg is a deep copy of m, a generated message.
func cloneMsg[M any](m *M) *M {
	if m == nil {
		return nil
	}
	c, _ := any(proto.Clone(any(m).(proto.Message))).(*M)
	return c
}

func (d directAgent) CreateSandbox(ctx context.Context, r *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	return direct(ctx, d.log, r, d.svc.CreateSandbox)
}

func (d directAgent) DestroySandbox(ctx context.Context, r *connect.Request[hostagentv1.DestroySandboxRequest]) (*connect.Response[hostagentv1.DestroySandboxResponse], error) {
	return direct(ctx, d.log, r, d.svc.DestroySandbox)
}

func (d directAgent) PauseSandbox(ctx context.Context, r *connect.Request[hostagentv1.PauseSandboxRequest]) (*connect.Response[hostagentv1.PauseSandboxResponse], error) {
	return direct(ctx, d.log, r, d.svc.PauseSandbox)
}

func (d directAgent) ResumeSandbox(ctx context.Context, r *connect.Request[hostagentv1.ResumeSandboxRequest]) (*connect.Response[hostagentv1.ResumeSandboxResponse], error) {
	return direct(ctx, d.log, r, d.svc.ResumeSandbox)
}

func (d directAgent) ListSandboxes(ctx context.Context, r *connect.Request[hostagentv1.ListSandboxesRequest]) (*connect.Response[hostagentv1.ListSandboxesResponse], error) {
	return direct(ctx, d.log, r, d.svc.ListSandboxes)
}

func (d directAgent) GetSandbox(ctx context.Context, r *connect.Request[hostagentv1.GetSandboxRequest]) (*connect.Response[hostagentv1.GetSandboxResponse], error) {
	return direct(ctx, d.log, r, d.svc.GetSandbox)
}

func (d directAgent) SetTimeout(ctx context.Context, r *connect.Request[hostagentv1.SetTimeoutRequest]) (*connect.Response[hostagentv1.SetTimeoutResponse], error) {
	return direct(ctx, d.log, r, d.svc.SetTimeout)
}

func (d directAgent) GetHostInfo(ctx context.Context, r *connect.Request[hostagentv1.GetHostInfoRequest]) (*connect.Response[hostagentv1.GetHostInfoResponse], error) {
	return direct(ctx, d.log, r, d.svc.GetHostInfo)
}

func (d directAgent) ListTemplates(ctx context.Context, r *connect.Request[hostagentv1.ListTemplatesRequest]) (*connect.Response[hostagentv1.ListTemplatesResponse], error) {
	return direct(ctx, d.log, r, d.svc.ListTemplates)
}

func (d directAgent) GetSandboxLogs(ctx context.Context, r *connect.Request[hostagentv1.GetSandboxLogsRequest]) (*connect.Response[hostagentv1.GetSandboxLogsResponse], error) {
	return direct(ctx, d.log, r, d.svc.GetSandboxLogs)
}

func (d directAgent) ForkSandbox(ctx context.Context, r *connect.Request[hostagentv1.ForkSandboxRequest]) (*connect.Response[hostagentv1.ForkSandboxResponse], error) {
	return direct(ctx, d.log, r, d.svc.ForkSandbox)
}

func (d directAgent) CreateVolume(ctx context.Context, r *connect.Request[hostagentv1.CreateVolumeRequest]) (*connect.Response[hostagentv1.CreateVolumeResponse], error) {
	return direct(ctx, d.log, r, d.svc.CreateVolume)
}

func (d directAgent) DeleteVolume(ctx context.Context, r *connect.Request[hostagentv1.DeleteVolumeRequest]) (*connect.Response[hostagentv1.DeleteVolumeResponse], error) {
	return direct(ctx, d.log, r, d.svc.DeleteVolume)
}

func (d directAgent) ReleaseVolume(ctx context.Context, r *connect.Request[hostagentv1.ReleaseVolumeRequest]) (*connect.Response[hostagentv1.ReleaseVolumeResponse], error) {
	return direct(ctx, d.log, r, d.svc.ReleaseVolume)
}

func (d directAgent) SnapshotSandbox(ctx context.Context, r *connect.Request[hostagentv1.SnapshotSandboxRequest]) (*connect.Response[hostagentv1.SnapshotSandboxResponse], error) {
	return direct(ctx, d.log, r, d.svc.SnapshotSandbox)
}

func (d directAgent) GetSandboxMetrics(ctx context.Context, r *connect.Request[hostagentv1.GetSandboxMetricsRequest]) (*connect.Response[hostagentv1.GetSandboxMetricsResponse], error) {
	return direct(ctx, d.log, r, d.svc.GetSandboxMetrics)
}
