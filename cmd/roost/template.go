package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"roost.dev/roost/agent"
	"roost.dev/roost/template"
)

func newTemplateCmd() *cobra.Command {
	var (
		dataDir string
		level   slog.LevelVar
	)
	level.Set(slog.LevelWarn)
	store := func() *template.Store {
		return template.NewStore(filepath.Join(dataDir, "templates"), newLogger(false, &level))
	}
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Manage the templates (root filesystems) of this host",
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&dataDir, "data-dir", "/var/lib/roost", "data directory; templates live in its templates/")
	pf.TextVar(&level, "log-level", &level, "log level: debug, info, warn, error")

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List templates",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := store().List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSOURCE\tSIZE\tCREATED")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", t.Name, t.Source, humanBytes(t.SizeBytes), t.Created.Local().Format("2006-01-02 15:04"))
			}
			return w.Flush()
		},
	}, newTemplateRmCmd(&dataDir, store), &cobra.Command{
		Use:   "import NAME FILE|-",
		Short: "Import a template from a root filesystem tarball (e.g. docker export output); - reads stdin",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader = cmd.InOrStdin()
			if args[1] != "-" {
				f, err := os.Open(args[1])
				if err != nil {
					return err
				}
				defer f.Close()
				r = f
			}
			t, err := store().Import(cmd.Context(), args[0], r)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "imported %s (%s, default user %q)\n", t.Name, humanBytes(t.SizeBytes), t.DefaultUser)
			return nil
		},
	}, &cobra.Command{
		Use:   "build base",
		Short: "Build the base template (Debian stable, with debootstrap) unless it is cached",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "base" {
				return fmt.Errorf("only base can be built; import other templates from a rootfs tarball")
			}
			t, err := store().EnsureBase(cmd.Context(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "template %s ready (%s, %s)\n", t.Name, humanBytes(t.SizeBytes), t.RootFS)
			return nil
		},
	})
	return cmd
}

func newTemplateRmCmd(dataDir *string, store func() *template.Store) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a template (refused while sandboxes made from it exist, unless --force)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			users, err := agent.SandboxesUsing(*dataDir, args[0])
			if err != nil {
				return err
			}
			if len(users) > 0 && !force {
				return fmt.Errorf("template %s is used by %d sandbox(es) (%s): destroy them first, or pass --force", args[0], len(users), strings.Join(users, ", "))
			}
			return store().Remove(args[0])
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove even while sandboxes use it (their files change under them)")
	return cmd
}

// humanBytes formats a size in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
