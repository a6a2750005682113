package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"roost.dev/roost/agent"
	"roost.dev/roost/client"
	"roost.dev/roost/template"
)

// localTemplates is the template store of this host, for what only a
// host can hold: templates imported from a rootfs tarball.
type localTemplates struct {
	dataDir string
	level   slog.LevelVar
}

func (l *localTemplates) store() *template.Store {
	return template.NewStore(filepath.Join(l.dataDir, "templates"), newLogger(false, &l.level))
}

func newTemplateCmd() *cobra.Command {
	local := &localTemplates{}
	local.level.Set(slog.LevelWarn)
	cmd := &cobra.Command{
		Use:   "template",
		Short: "Build, import, list and remove templates through the API",
		Long: `Templates are what sandboxes start from. They are built from a Dockerfile
(roost template build) or imported from an image (roost template import), kept
by the control plane and pulled by every host that creates a sandbox of them.
The base template (Debian bookworm) is built on each host by roost itself.

The CLI finds the API through $` + apiURLEnv + ` and $` + apiKeyEnv + `, as roost sandbox does.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&local.dataDir, "data-dir", "/var/lib/roost", "this host's data directory, for rootfs tarball imports (they stay on this host)")
	pf.TextVar(&local.level, "log-level", &local.level, "log level of host-local work: debug, info, warn, error")
	cmd.AddCommand(newTemplateBuildCmd(), newTemplateImportCmd(local), newTemplateListCmd(), newTemplateRmCmd(local))
	return cmd
}

func newTemplateListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List templates: the team's, public ones and the hosts' own (such as base)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			ts, err := c.Templates(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ts)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tTAGS\tSIZE\tDIGEST\tHOSTS\tSTATUS")
			for _, t := range ts {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", templateName(t), dash(strings.Join(t.Tags, ",")), templateSize(t.SizeBytes),
					dash(shortDigest(t.Digest)), dash(strings.Join(t.Hosts, ",")), dash(t.Status))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newTemplateRmCmd(local *localTemplates) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a template (one imported from a rootfs tarball: from this host)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			err = c.DeleteTemplate(cmd.Context(), args[0])
			var apiErr *client.Error
			if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound {
				return err
			}
			// Not the control plane's: one of this host's own trees?
			if _, lerr := local.store().Get(args[0]); lerr != nil {
				return err
			}
			return removeLocal(local, args[0], force)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "remove a host's own template even while sandboxes use it (their files change under them)")
	return cmd
}

// removeLocal removes a template from this host's store, unless
// sandboxes of this host use it.
func removeLocal(local *localTemplates, name string, force bool) error {
	users, err := agent.SandboxesUsing(local.dataDir, name)
	if err != nil {
		return err
	}
	if len(users) > 0 && !force {
		return fmt.Errorf("template %s is used by %d sandbox(es) (%s): destroy them first, or pass --force", name, len(users), strings.Join(users, ", "))
	}
	return local.store().Remove(name)
}

// templateName is the name a template is listed under: name:tag names
// come from its tags.
func templateName(t client.TemplateInfo) string {
	switch {
	case t.Name != "":
		return t.Name
	case len(t.Names) > 0:
		return t.Names[0]
	default:
		return t.TemplateID
	}
}

// shortDigest is the first 12 hex digits of a digest.
func shortDigest(d string) string {
	d = strings.TrimPrefix(d, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	return d
}

func templateSize(n int64) string {
	if n <= 0 {
		return "-"
	}
	return humanBytes(n)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
