package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

// newForkCmd is `roost sandbox fork ID`: count new sandboxes from a
// running sandbox's current state, one line each (the ID, or why that
// fork failed); the exit status is 1 when any fork failed.
func newForkCmd(asJSON *bool) *cobra.Command {
	var count int
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "fork ID",
		Short: "Make new sandboxes from a running sandbox's current state, its processes running",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			stop := progress(cmd.ErrOrStderr(), "forking sandbox")
			results, err := c.Fork(cmd.Context(), args[0], count, timeout)
			stop()
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(cmd.OutOrStdout(), results)
			}
			failed := 0
			for _, r := range results {
				if r.Sandbox != nil {
					fmt.Fprintln(cmd.OutOrStdout(), r.Sandbox.ID)
					continue
				}
				failed++
				fmt.Fprintf(cmd.OutOrStdout(), "fork failed: %v\n", r.Error)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d forks failed", failed, len(results))
			}
			return nil
		},
	}
	cmd.Flags().IntVarP(&count, "count", "n", 1, "how many forks (1 to 100)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "lifetime of each fork before it is killed")
	return cmd
}
