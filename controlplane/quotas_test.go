package controlplane

import (
	"errors"
	"slices"
	"testing"
	"time"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/store"
)

func TestOverRetention(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	paused := func(id string, ago time.Duration) store.Sandbox {
		return store.Sandbox{ID: id, State: store.SandboxPaused, PausedAt: now.Add(-ago)}
	}
	// Paused before PausedAt was recorded: UpdatedAt stands in.
	old := store.Sandbox{ID: "legacy", State: store.SandboxPaused, UpdatedAt: now.Add(-3 * time.Hour)}
	sbs := []store.Sandbox{paused("a", time.Minute), paused("b", 2*time.Hour), old, paused("c", time.Second)}
	cases := []struct {
		quota store.Quota
		want  []string
	}{
		{store.Quota{}, nil},
		{store.Quota{store.LimitPaused: 4}, nil},
		{store.Quota{store.LimitPaused: 2}, []string{"b", "legacy"}}, // the two paused longest ago
		{store.Quota{store.LimitPaused: 0}, []string{"c", "a", "b", "legacy"}},
		{store.Quota{store.LimitPausedRetention: 3600}, []string{"b", "legacy"}},
		{store.Quota{store.LimitPausedRetention: 30, store.LimitPaused: 0}, []string{"c", "a", "b", "legacy"}},
	}
	for _, c := range cases {
		var got []string
		for _, r := range overRetention(slices.Clone(sbs), c.quota, now) {
			got = append(got, r.sb.ID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("quota %v retires %v, want %v", c.quota, got, c.want)
		}
	}
}

func TestQuotaDefaults(t *testing.T) {
	q, err := quotaDefaults(store.Quota{store.LimitSandboxes: 5})
	if err != nil || q[store.LimitSandboxes] != 5 || q[store.LimitVCPUs] != DefaultTeamQuota[store.LimitVCPUs] {
		t.Fatalf("defaults with sandboxes=5: %v, %v", q, err)
	}
	for _, bad := range []store.Quota{{"gpus": 1}, {store.LimitVCPUs: -1}, {store.LimitTimeout: 0}, {store.LimitTimeout: 86401}} {
		if _, err := quotaDefaults(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("quotaDefaults(%v) = %v, want errdefs.ErrInvalid", bad, err)
		}
	}
}
