package main

import (
	"maps"

	"roost.dev/roost/controlplane"
	"roost.dev/roost/store"
)

// quotaFlag is --team-quota: limits over roost's built-in defaults. It
// may be given more than once; later values win.
type quotaFlag struct{ q store.Quota }

func (f *quotaFlag) Set(s string) error {
	q, err := store.ParseQuota(s)
	if err != nil {
		return err
	}
	if f.q == nil {
		f.q = store.Quota{}
	}
	maps.Copy(f.q, q)
	return nil
}

func (f *quotaFlag) String() string { return f.q.String() }
func (f *quotaFlag) Type() string   { return "limits" }

// teamQuotaUsage documents --team-quota for roost server and roost up.
var teamQuotaUsage = `every team's quota where the team sets no limit of its own, as limit=value,...: ` +
	`sandboxes (concurrent, starting or running), vcpus and memory-mb (their totals), disk-mb (also of paused ones), ` +
	`timeout (longest, seconds or 24h), paused (paused sandboxes kept), paused-retention (how long, seconds or 720h). ` +
	`Default: ` + controlplane.DefaultTeamQuota.String()
