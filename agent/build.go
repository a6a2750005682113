package agent

import (
	"context"
	"errors"

	"connectrpc.com/connect"

	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
)

// BuildTemplate is answered unimplemented until the template builder is
// wired in (docs/templates.md).
func (s *service) BuildTemplate(context.Context, *connect.Request[hostagentv1.BuildTemplateRequest], *connect.ServerStream[hostagentv1.BuildTemplateEvent]) error {
	return connect.NewError(connect.CodeUnimplemented, errors.New("this agent does not build templates yet"))
}
