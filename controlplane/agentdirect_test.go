package controlplane

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"connectrpc.com/connect"

	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/gen/roost/hostagent/v1/hostagentv1connect"
)

// fakeService answers CreateSandbox with what create does.
type fakeService struct {
	hostagentv1connect.UnimplementedHostAgentServiceHandler
	create func(*connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error)
}

func (f fakeService) CreateSandbox(_ context.Context, r *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
	return f.create(r)
}

// TestDirectAgent: a direct call keeps the wire's guarantees: copies
// both ways, the headers, errors as Connect errors, and a panic as an
// Internal error.
func TestDirectAgent(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	call := func(f fakeService, req *hostagentv1.CreateSandboxRequest) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
		r := connect.NewRequest(req)
		r.Header().Set("X-Test", "1")
		return directAgent{svc: f, log: log}.CreateSandbox(context.Background(), r)
	}
	t.Run("Copies", func(t *testing.T) {
		kept := &hostagentv1.CreateSandboxResponse{Sandbox: &hostagentv1.Sandbox{SandboxId: "sb1"}}
		req := &hostagentv1.CreateSandboxRequest{SandboxId: "sb1", Metadata: map[string]string{"a": "1"}}
		resp, err := call(fakeService{create: func(r *connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
			if r.Header().Get("X-Test") != "1" {
				t.Error("header not passed")
			}
			r.Msg.Metadata["a"] = "changed by the agent"
			return connect.NewResponse(kept), nil
		}}, req)
		if err != nil {
			t.Fatal(err)
		}
		if req.Metadata["a"] != "1" {
			t.Errorf("the agent changed the caller's request: %v", req.Metadata)
		}
		resp.Msg.Sandbox.SandboxId = "changed by the caller"
		if kept.GetSandbox().GetSandboxId() != "sb1" {
			t.Error("the caller changed the agent's answer")
		}
	})
	t.Run("PlainError", func(t *testing.T) {
		_, err := call(fakeService{create: func(*connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
			return nil, errors.New("disk on fire")
		}}, &hostagentv1.CreateSandboxRequest{})
		if connect.CodeOf(err) != connect.CodeUnknown || err.Error() != "unknown: disk on fire" {
			t.Errorf("err = %v (%v), want unknown: disk on fire", err, connect.CodeOf(err))
		}
	})
	t.Run("ConnectError", func(t *testing.T) {
		_, err := call(fakeService{create: func(*connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
			return nil, connect.NewError(connect.CodeResourceExhausted, errors.New("host full"))
		}}, &hostagentv1.CreateSandboxRequest{})
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Errorf("err = %v, want resource_exhausted", err)
		}
	})
	t.Run("Panic", func(t *testing.T) {
		_, err := call(fakeService{create: func(*connect.Request[hostagentv1.CreateSandboxRequest]) (*connect.Response[hostagentv1.CreateSandboxResponse], error) {
			panic("agent bug")
		}}, &hostagentv1.CreateSandboxRequest{})
		if connect.CodeOf(err) != connect.CodeInternal {
			t.Errorf("err = %v, want internal", err)
		}
	})
}
