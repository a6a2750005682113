package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

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

// newServerQuotaCmd is `roost server quota`: an operator reads or sets
// one team's own limits in the control plane's database.
func newServerQuotaCmd(o *serverOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "quota TEAM-ID [limit=value|limit=default ...]",
		Short: "Show or set one team's quota",
		Long: `Show one team's quota: each limit enforced, whether it is the team's own or
the server's default (give the server's --team-quota here too to see the
defaults it runs with), and what the team's sandboxes hold. With
limit=value arguments, set those limits for the team first; limit=default
drops the team's own value. A lower limit refuses new use; sandboxes the
team has keep running. GET /teams shows a key's team ID and its quota.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServerQuota(cmd.Context(), o, args[0], args[1:], cmd.OutOrStdout())
		},
	}
}

func runServerQuota(ctx context.Context, o *serverOptions, team string, changes []string, w io.Writer) error {
	cp, closeCP, err := openControlPlane(ctx, o, controlplane.Config{TeamQuota: o.teamQuota.q})
	if err != nil {
		return err
	}
	defer closeCP()
	if len(changes) > 0 {
		tq, err := cp.TeamQuota(ctx, team)
		if err != nil {
			return err
		}
		own, err := applyQuotaChanges(tq.Own, changes)
		if err != nil {
			return err
		}
		if err := cp.SetTeamQuota(ctx, team, own); err != nil {
			return err
		}
	}
	tq, err := cp.TeamQuota(ctx, team)
	if err != nil {
		return err
	}
	return printQuota(w, tq)
}

// applyQuotaChanges returns own with limit=value set and limit=default
// dropped.
func applyQuotaChanges(own store.Quota, changes []string) (store.Quota, error) {
	own = maps.Clone(own)
	if own == nil {
		own = store.Quota{}
	}
	for _, c := range changes {
		name, val, _ := strings.Cut(c, "=")
		if val == "default" {
			if l := store.QuotaLimit(name); !l.Valid() {
				return nil, fmt.Errorf("unknown limit %q", name)
			}
			delete(own, store.QuotaLimit(name))
			continue
		}
		q, err := store.ParseQuota(c)
		if err != nil {
			return nil, err
		}
		maps.Copy(own, q)
	}
	return own, nil
}

func printQuota(w io.Writer, tq controlplane.TeamQuota) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LIMIT\tVALUE\tFROM\tIN USE")
	for _, l := range store.Limits {
		v, ok := tq.Effective[l]
		value := fmt.Sprint(v)
		if !ok {
			value = "none"
		}
		from := "default"
		if _, own := tq.Own[l]; own {
			from = "team"
		}
		used := "-"
		if u, ok := tq.Usage.Of(l); ok {
			used = fmt.Sprint(u)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l, value, from, used)
	}
	return tw.Flush()
}
