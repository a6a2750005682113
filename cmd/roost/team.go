package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"roost.dev/roost/client"
	"roost.dev/roost/store"
)

// newTeamCmd is `roost team`: the operator's teams, through the API with
// the operator's token.
func newTeamCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "team",
		Short: "Create, list and remove teams and set their quotas (the operator's token)",
		Long: `The operator's commands, through the API with the operator's token:
$` + adminTokenEnv + `, else /var/lib/roost/` + adminTokenFile + ` (roost up and roost server
make it at their first start). The API is at $` + apiURLEnv + `.`,
	}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON for scripts instead of tables")
	var quota []string
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a team and its first API key, shown this once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			q, err := parseQuotaArgs(quota, false)
			if err != nil {
				return err
			}
			own := map[string]int64{}
			for l, v := range q {
				own[l] = *v
			}
			c, err := operatorClient()
			if err != nil {
				return err
			}
			t, err := c.CreateTeam(cmd.Context(), args[0], own)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), t)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "team %s (%s)\nAPI key, shown this once: %s\n", t.ID, t.Name, t.APIKey.Key)
			return nil
		},
	}
	create.Flags().StringSliceVar(&quota, "quota", nil, "the team's own limits, as limit=value (see roost team quota)")
	list := &cobra.Command{
		Use: "list", Short: "List every team with its use", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := operatorClient()
			if err != nil {
				return err
			}
			teams, err := c.Teams(cmd.Context())
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), teams, err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tCREATED\tSANDBOXES\tVCPUS\tMEMORY-MB")
			for _, t := range teams {
				var u map[string]int64
				if t.Quota != nil {
					u = t.Quota.Usage
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", t.ID, t.Name, t.CreatedAt.Format("2006-01-02 15:04"),
					u["sandboxes"], u["vcpus"], u["memory-mb"])
			}
			return tw.Flush()
		},
	}
	var force bool
	rm := &cobra.Command{
		Use: "rm ID", Short: "Remove a team with its keys, quotas, templates and webhooks", Args: cobra.ExactArgs(1),
		Long: `Remove a team. One with sandboxes is refused unless --force, which kills
them first; one with volumes is refused: delete them with the team's key.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := operatorClient()
			if err != nil {
				return err
			}
			return c.DeleteTeam(cmd.Context(), args[0], force)
		},
	}
	rm.Flags().BoolVar(&force, "force", false, "kill the team's sandboxes first")
	cmd.AddCommand(create, list, rm, newTeamQuotaCmd(&asJSON))
	return cmd
}

func newTeamQuotaCmd(asJSON *bool) *cobra.Command {
	return &cobra.Command{
		Use:   "quota TEAM-ID [limit=value|limit=default ...]",
		Short: "Show or set one team's quota",
		Long: `Show one team's quota: each limit enforced, whether it is the team's own or
the server's default, and what the team's sandboxes hold. With limit=value
arguments, set those limits for the team first; limit=default drops the
team's own value. A lower limit refuses new use; sandboxes the team has keep
running. Limits: ` + strings.Join(limitNames(), ", ") + `.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			changes, err := parseQuotaArgs(args[1:], true)
			if err != nil {
				return err
			}
			c, err := operatorClient()
			if err != nil {
				return err
			}
			var q client.Quota
			if len(changes) > 0 {
				q, err = c.SetTeamQuota(cmd.Context(), args[0], changes)
			} else {
				q, err = c.TeamQuota(cmd.Context(), args[0])
			}
			if err != nil || *asJSON {
				return orJSON(cmd.OutOrStdout(), q, err)
			}
			return printQuota(cmd.OutOrStdout(), q)
		},
	}
}

func limitNames() []string {
	var out []string
	for _, l := range store.Limits {
		out = append(out, string(l))
	}
	return out
}

// parseQuotaArgs reads limit=value arguments (seconds limits also take
// durations: timeout=1h); with allowDefault, limit=default is a nil
// value (drop the team's own).
func parseQuotaArgs(args []string, allowDefault bool) (map[string]*int64, error) {
	out := map[string]*int64{}
	for _, a := range args {
		name, val, _ := strings.Cut(a, "=")
		if val == "default" && allowDefault {
			if !store.QuotaLimit(name).Valid() {
				return nil, fmt.Errorf("unknown limit %q (known: %s)", name, strings.Join(limitNames(), ", "))
			}
			out[name] = nil
			continue
		}
		q, err := store.ParseQuota(a)
		if err != nil {
			return nil, err
		}
		for l, v := range q {
			out[string(l)] = &v
		}
	}
	return out, nil
}

func printQuota(w io.Writer, q client.Quota) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LIMIT\tVALUE\tFROM\tIN USE")
	for _, l := range limitNames() {
		value := "none"
		if v, ok := q.Limits[l]; ok {
			value = fmt.Sprint(v)
		}
		from := "default"
		if _, own := q.Own[l]; own {
			from = "team"
		}
		used := "-"
		if u, ok := q.Usage[l]; ok {
			used = fmt.Sprint(u)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l, value, from, used)
	}
	return tw.Flush()
}

// orJSON prints v as JSON unless err.
func orJSON(w io.Writer, v any, err error) error {
	if err != nil {
		return err
	}
	return printJSON(w, v)
}

// newKeyCmd is `roost key`: API keys of the caller's team, or with
// --team, the operator's for any team.
func newKeyCmd() *cobra.Command {
	var asJSON bool
	var team string
	cmd := &cobra.Command{Use: "key", Aliases: []string{"keys"}, Short: "Create, list and revoke API keys"}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON for scripts instead of tables")
	cmd.PersistentFlags().StringVar(&team, "team", "", "act on this team's keys with the operator's token (default: the team of $"+apiKeyEnv+")")
	clientFor := func() (*client.Client, error) {
		if team == "" {
			return apiClient()
		}
		c, err := operatorClient()
		if err != nil {
			return nil, err
		}
		return c.ForTeam(team), nil
	}
	var name string
	create := &cobra.Command{
		Use: "create", Short: "Create an API key and print it (shown this once)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := clientFor()
			if err != nil {
				return err
			}
			k, err := c.CreateAPIKey(cmd.Context(), team, name)
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), k, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), k.Key)
			return nil
		},
	}
	create.Flags().StringVar(&name, "name", "cli", "the key's name")
	list := &cobra.Command{
		Use: "list", Short: "List the team's API keys (masked)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := clientFor()
			if err != nil {
				return err
			}
			keys, err := c.APIKeys(cmd.Context())
			if err != nil || asJSON {
				return orJSON(cmd.OutOrStdout(), keys, err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tKEY\tCREATED")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s\t%s…%s\t%s\n", k.ID, k.Name, k.Mask.Prefix, k.Mask.Suffix, k.CreatedAt.Format("2006-01-02 15:04"))
			}
			return tw.Flush()
		},
	}
	rm := &cobra.Command{
		Use: "rm ID", Short: "Revoke an API key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := clientFor()
			if err != nil {
				return err
			}
			return c.DeleteAPIKey(cmd.Context(), team, args[0])
		},
	}
	cmd.AddCommand(create, list, rm)
	return cmd
}
