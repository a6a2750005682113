package controlplane

import (
	"context"

	"connectrpc.com/connect"

	"roost.dev/roost/errdefs"
	hostagentv1 "roost.dev/roost/gen/roost/hostagent/v1"
	"roost.dev/roost/store"
)

// pausedDisk sums the disk the team's paused sandboxes hold, as their
// agents measure it (a paused sandbox keeps what it wrote, and a
// hibernated one its memory, on its host's disk): one ListSandboxes per
// host. nil when a host of one could not be asked.
func (s *Server) pausedDisk(ctx context.Context, teamID string) *int64 {
	byHost := map[string]map[string]bool{}
	err := s.eachPage(ctx, store.SandboxFilter{TeamID: teamID, States: []store.SandboxState{store.SandboxPaused}}, func(page []store.Sandbox) {
		for _, sb := range page {
			if byHost[sb.HostID] == nil {
				byHost[sb.HostID] = map[string]bool{}
			}
			byHost[sb.HostID][sb.ID] = true
		}
	})
	if err != nil {
		s.log.Warn("paused disk: list paused sandboxes failed", "team", teamID, "err", err)
		return nil
	}
	var total int64
	for hostID, ids := range byHost {
		n, err := s.hostPausedDisk(ctx, hostID, ids)
		if err != nil {
			s.log.Warn("paused disk: host not asked", "team", teamID, "host", hostID, "err", err)
			return nil
		}
		total += n
	}
	return &total
}

// hostPausedDisk sums the disk that the paused sandboxes ids hold on host
// hostID.
func (s *Server) hostPausedDisk(ctx context.Context, hostID string, ids map[string]bool) (int64, error) {
	h, err := s.store.GetHost(ctx, hostID)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := s.agents.For(h).ListSandboxes(ctx, connect.NewRequest(&hostagentv1.ListSandboxesRequest{
		States: []hostagentv1.SandboxState{hostagentv1.SandboxState_SANDBOX_STATE_PAUSED}, WithDiskUsage: true,
	}))
	if err != nil {
		return 0, errdefs.FromConnect("agent list sandboxes", err)
	}
	var n int64
	for _, sb := range resp.Msg.GetSandboxes() {
		if ids[sb.GetSandboxId()] {
			n += sb.GetDiskBytes()
		}
	}
	return n, nil
}
