package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"roost.dev/roost/client"
)

// newAuditCmd is `roost audit`: the audit log, the team's (the API key)
// or, with --all or --team, the operator's view.
func newAuditCmd() *cobra.Command {
	var asJSON, all bool
	var q client.AuditQuery
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit log: who created, killed, paused or resumed what, and key, team and webhook changes",
		Long: `Read the audit log, oldest first: the team's with $` + apiKeyEnv + `; with --all or
--team, every team's or one team's with the operator's token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := apiClient()
			if all || q.Team != "" {
				c, err = operatorClient()
			}
			if err != nil {
				return err
			}
			if since > 0 {
				q.Since = time.Now().Add(-since)
			}
			var entries []client.AuditEntry
			for {
				page, next, err := c.Audit(cmd.Context(), q)
				if err != nil {
					return err
				}
				entries = append(entries, page...)
				if next == "" {
					break
				}
				q.Cursor = next
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), entries)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tTEAM\tACTOR\tACTION\tTARGET\tFROM\tSTATUS\tERROR")
			for _, e := range entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.At.Local().Format(time.DateTime), e.TeamID, e.Actor, e.Action,
					e.Target, e.Source, e.Status, e.Error)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON for scripts instead of a table")
	f.BoolVar(&all, "all", false, "every team's entries (the operator's token)")
	f.StringVar(&q.Team, "team", "", "one team's entries (the operator's token)")
	f.StringVar(&q.Action, "action", "", "one action only, e.g. sandbox.create")
	f.DurationVar(&since, "since", 0, "only entries this recent, e.g. 1h")
	return cmd
}

// newEventsCmd is `roost events`: the team's sandbox lifecycle events.
func newEventsCmd() *cobra.Command {
	var asJSON, follow bool
	var sandbox string
	var limit int
	var types []string
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Show the team's sandbox lifecycle events, or follow them as they happen",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			print := func(ev client.Event) error {
				if asJSON {
					return printJSON(out, ev)
				}
				_, err := fmt.Fprintf(out, "%s  %-32s %s %s\n", ev.Timestamp.Local().Format(time.DateTime+".000"),
					strings.TrimPrefix(ev.Type, "sandbox.lifecycle."), ev.SandboxID, ev.Data)
				return err
			}
			if follow {
				return c.StreamEvents(cmd.Context(), sandbox, types, print)
			}
			evs, err := c.Events(cmd.Context(), sandbox, limit, types...)
			if err != nil {
				return err
			}
			for i := len(evs) - 1; i >= 0; i-- { // oldest first
				if err := print(evs[i]); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print each event as JSON")
	f.BoolVarP(&follow, "follow", "f", false, "follow new events as they happen (Ctrl-C stops)")
	f.StringVar(&sandbox, "sandbox", "", "one sandbox's events only")
	f.IntVar(&limit, "limit", 20, "how many of the latest events (1 to 100)")
	f.StringSliceVar(&types, "type", nil, "only these types, e.g. sandbox.lifecycle.killed")
	return cmd
}

// newWebhookCmd is `roost webhook`: the team's webhooks.
func newWebhookCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{Use: "webhook", Aliases: []string{"webhooks"}, Short: "Register, list and remove webhooks of sandbox lifecycle events"}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON for scripts instead of tables")
	var name, secret string
	events := []string{"sandbox.lifecycle.created", "sandbox.lifecycle.killed", "sandbox.lifecycle.updated",
		"sandbox.lifecycle.paused", "sandbox.lifecycle.resumed", "sandbox.lifecycle.checkpointed"}
	create := &cobra.Command{
		Use:   "create URL",
		Short: "Register a webhook: each event is POSTed to URL, signed with --secret",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if secret == "" {
				return fmt.Errorf("--secret is required: deliveries are signed with it")
			}
			c, err := apiClient()
			if err != nil {
				return err
			}
			w, err := c.CreateWebhook(cmd.Context(), name, args[0], secret, events)
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), w, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), w.ID)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "", "the webhook's name")
	create.Flags().StringVar(&secret, "secret", "", "the secret deliveries are signed with (8 to 256 bytes)")
	create.Flags().StringSliceVar(&events, "event", events, "the event types it gets")
	list := &cobra.Command{
		Use: "list", Short: "List the team's webhooks", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			ws, err := c.Webhooks(cmd.Context())
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), ws, err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tURL\tENABLED\tEVENTS")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\n", w.ID, w.Name, w.URL, w.Enabled, len(w.Events))
			}
			return tw.Flush()
		},
	}
	rm := &cobra.Command{
		Use: "rm ID", Short: "Remove a webhook and its delivery log", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			return c.DeleteWebhook(cmd.Context(), args[0])
		},
	}
	deliveries := &cobra.Command{
		Use: "deliveries ID", Short: "Show a webhook's delivery log, newest first", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			ds, err := c.Deliveries(cmd.Context(), args[0])
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), ds, err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "EVENT TIME\tTYPE\tSTATE\tATTEMPTS\tLAST STATUS\tLAST ERROR")
			for _, d := range ds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", d.EventAt.Local().Format(time.DateTime), d.EventType, d.State,
					d.Attempts, d.LastStatus, d.LastError)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(create, list, rm, deliveries)
	return cmd
}

// newMetricsCmd is `roost sandbox metrics ID`: a sandbox's metrics
// history, from its host's samples.
func newMetricsCmd(asJSON *bool) *cobra.Command {
	var since, step time.Duration
	cmd := &cobra.Command{
		Use:   "metrics ID",
		Short: "Show a sandbox's CPU, memory, disk and network over time (also after it was killed, for a while)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			var start time.Time
			if since > 0 {
				start = time.Now().Add(-since)
			}
			points, err := c.Metrics(cmd.Context(), args[0], start, time.Time{}, step)
			if err != nil || *asJSON {
				return orJSON(cmd.OutOrStdout(), points, err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tSTEP\tCPU%\tMEM MiB\tCACHE MiB\tDISK MiB\tNET RX KiB\tNET TX KiB")
			for _, p := range points {
				fmt.Fprintf(tw, "%s\t%s\t%.1f\t%d\t%d\t%d\t%d\t%d\n", p.Timestamp.Local().Format(time.TimeOnly),
					time.Duration(p.ResolutionMs)*time.Millisecond, p.CPUUsedPct, p.MemUsed>>20, p.MemCache>>20, p.DiskUsed>>20,
					p.NetRxBytes>>10, p.NetTxBytes>>10)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().DurationVar(&since, "since", 0, "from this long ago (default: the sandbox's start, at most 24 h back)")
	cmd.Flags().DurationVar(&step, "step", 0, "one point per step, e.g. 1m (default: as kept: 5 s for the last hour, coarser before)")
	return cmd
}
