package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newSnapshotCmd is `roost sandbox snapshot ID [--name N]`: a template of
// the sandbox's files as they are now, printed as the ID creates take.
func newSnapshotCmd(asJSON *bool) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "snapshot ID",
		Short: "Make a snapshot of a sandbox's files: a template new sandboxes start from (the sandbox runs on)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			stop := progress(cmd.ErrOrStderr(), "snapshotting sandbox")
			snap, err := c.CreateSnapshot(cmd.Context(), args[0], name)
			stop()
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(cmd.OutOrStdout(), snap)
			}
			fmt.Fprintln(cmd.OutOrStdout(), snap.SnapshotID)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the snapshot's name (default: its ID); a name used before gets a new build of that snapshot")
	return cmd
}

// newSnapshotsCmd is `roost snapshot list|rm`.
func newSnapshotsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "snapshot", Aliases: []string{"snapshots"}, Short: "List and remove sandbox snapshots"}
	var asJSON bool
	var sandbox string
	list := &cobra.Command{
		Use: "list", Short: "List the team's snapshots, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			snaps, err := c.ListSnapshots(cmd.Context(), sandbox)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), snaps)
			}
			for _, s := range snaps {
				fmt.Fprintln(cmd.OutOrStdout(), s.SnapshotID)
			}
			return nil
		},
	}
	list.Flags().StringVar(&sandbox, "sandbox", "", "only the snapshots of this sandbox")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use: "rm ID...", Short: "Remove snapshots", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			for _, id := range args {
				if err := c.DeleteSnapshot(cmd.Context(), id); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.AddCommand(list, rm)
	return cmd
}
