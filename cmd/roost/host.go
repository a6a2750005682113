package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"roost.dev/roost/client"
)

func newHostCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "host",
		Short: "List, cordon, drain and remove hosts (the operator's token)",
		Long: `The operator's host commands, through the API with the operator's token
($` + adminTokenEnv + `, else /var/lib/roost/` + adminTokenFile + `). The API is at $` + apiURLEnv + `.

A cordoned host takes no new sandboxes and keeps those it has. drain cordons
a host, pauses every running sandbox on it, memory kept where its runtime
can, and moves the hibernated ones to other hosts of its runtime. rm removes
a cordoned host that holds no sandbox; its agent is refused from then on.`,
	}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON for scripts instead of tables")
	list := &cobra.Command{
		Use: "list", Short: "List the hosts with their state and sandboxes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := operatorClient()
			if err != nil {
				return err
			}
			hosts, err := c.Hosts(cmd.Context())
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), hosts, err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATE\tCORDONED\tSANDBOXES\tRUNTIME\tCPUS\tMEMORY-MB\tLAST-HEARTBEAT")
			for _, h := range hosts {
				beat := "-"
				if h.LastHeartbeat != nil {
					beat = time.Since(*h.LastHeartbeat).Round(time.Second).String() + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%d\t%s\t%d\t%d\t%s\n", h.ID, h.Name, h.State, h.Cordoned, h.Sandboxes,
					h.Runtime, h.Capacity.CPUs, h.Capacity.MemoryMB, beat)
			}
			return tw.Flush()
		},
	}
	cordon := func(use, short string, cordoned bool) *cobra.Command {
		return &cobra.Command{
			Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := operatorClient()
				if err != nil {
					return err
				}
				h, err := c.CordonHost(cmd.Context(), args[0], cordoned)
				if err != nil || asJSON {
					return orJSON(cmd.OutOrStdout(), h, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "host %s: cordoned %t, %d sandboxes\n", h.ID, h.Cordoned, h.Sandboxes)
				return nil
			},
		}
	}
	var wait time.Duration
	drain := &cobra.Command{
		Use: "drain ID", Short: "Cordon a host, pause its sandboxes and move them to other hosts", Args: cobra.ExactArgs(1),
		Long: `Cordon a host and pause its running sandboxes, memory kept where its runtime
can (hibernated). Then move every hibernated sandbox to another host of the
same runtime with room: it keeps its ID, files, processes and tokens, and
resumes there. Sandboxes frozen in memory, with volumes, or with nowhere to
go stay, paused, and resume on this host. With --wait, then wait until
nothing runs on the host: the sandboxes that could not be paused end
(killed, or by their timeout) or are paused.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := operatorClient()
			if err != nil {
				return err
			}
			d, err := c.DrainHost(cmd.Context(), args[0])
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), d, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "host %s cordoned: %d sandboxes paused, %d failed; %d moved to other hosts, %d kept\n",
				d.Host.ID, len(d.Paused), len(d.Failed), len(d.Moved), len(d.Kept))
			printEach(out, "  %s failed: %s\n", d.Failed)
			printEach(out, "  %s moved to host %s\n", d.Moved)
			printEach(out, "  %s kept: %s\n", d.Kept)
			if wait > 0 {
				return waitDrained(cmd, c, d.Host, wait)
			}
			if len(d.Failed) > 0 {
				return fmt.Errorf("%d sandboxes of host %s could not be paused", len(d.Failed), d.Host.ID)
			}
			return nil
		},
	}
	drain.Flags().DurationVar(&wait, "wait", 0, "wait this long for the sandboxes that still run to end (0: do not wait)")
	rm := &cobra.Command{
		Use: "rm ID", Short: "Remove a cordoned host that holds no sandbox", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := operatorClient()
			if err != nil {
				return err
			}
			return c.RemoveHost(cmd.Context(), args[0])
		},
	}
	cmd.AddCommand(list, cordon("cordon", "Take no new sandboxes on a host", true),
		cordon("uncordon", "Take new sandboxes on a host again", false), drain, rm)
	return cmd
}

// drainPoll is how often drain --wait looks at the host again.
const drainPoll = 2 * time.Second

// waitDrained waits up to wait until host h runs no sandbox, saying how
// many still run whenever that changes.
func waitDrained(cmd *cobra.Command, c *client.Client, h client.Host, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), wait)
	defer cancel()
	last := -1
	for {
		if h.Running == 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "host %s drained: nothing runs on it\n", h.ID)
			return nil
		}
		if h.Running != last {
			fmt.Fprintf(cmd.OutOrStdout(), "waiting for %d sandboxes still running on host %s\n", h.Running, h.ID)
			last = h.Running
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("host %s still runs %d sandboxes after %v", h.ID, h.Running, wait)
		case <-time.After(drainPoll):
		}
		hosts, err := c.Hosts(ctx)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("host %s still runs %d sandboxes after %v", h.ID, h.Running, wait)
		}
		if err != nil {
			return fmt.Errorf("wait for host %s to drain: %w", h.ID, err)
		}
		i := slices.IndexFunc(hosts, func(x client.Host) bool { return x.ID == h.ID })
		if i < 0 {
			return fmt.Errorf("host %s was removed while draining", h.ID)
		}
		h = hosts[i]
	}
}

// printEach prints each sandbox of m, in order, with what m says of it,
// by format (the sandbox, then its value).
func printEach(w io.Writer, format string, m map[string]string) {
	for _, id := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(w, format, id, m[id])
	}
}
