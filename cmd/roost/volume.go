package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"roost.dev/roost/client"
)

// newVolumeCmd is `roost volume`: the team's volumes (docs/persistence.md)
// and their files, through the API and the volume content API.
func newVolumeCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{Use: "volume", Aliases: []string{"vol"}, Short: "Create, list and remove volumes, and copy files in and out of them"}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON for scripts instead of tables")
	cmd.AddCommand(newVolumeCreateCmd(&asJSON), newVolumeListCmd(&asJSON), newVolumeRmCmd(), newVolumeLsCmd(&asJSON), newVolumeCpCmd())
	return cmd
}

func newVolumeCreateCmd(asJSON *bool) *cobra.Command {
	size := byteSize(1 << 30)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a volume and print its ID",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if size%(1<<20) != 0 {
				return fmt.Errorf("--size %s: a whole number of MiB", size.String())
			}
			c, err := apiClient()
			if err != nil {
				return err
			}
			v, err := c.CreateVolume(cmd.Context(), args[0], int64(size>>20))
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			fmt.Fprintln(cmd.OutOrStdout(), v.ID)
			return nil
		},
	}
	cmd.Flags().Var(&size, "size", "the volume's size, e.g. 1GiB or 500MiB")
	return cmd
}

func newVolumeListCmd(asJSON *bool) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the team's volumes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			vs, err := c.Volumes(cmd.Context())
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(cmd.OutOrStdout(), vs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tID")
			for _, v := range vs {
				fmt.Fprintf(tw, "%s\t%s\n", v.Name, v.ID)
			}
			return tw.Flush()
		},
	}
}

func newVolumeRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a volume and its files (refused while a sandbox mounts it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, v, err := volumeNamed(cmd, args[0])
			if err != nil {
				return err
			}
			return c.DeleteVolume(cmd.Context(), v.ID)
		},
	}
}

func newVolumeLsCmd(asJSON *bool) *cobra.Command {
	var depth int
	cmd := &cobra.Command{
		Use:   "ls NAME [PATH]",
		Short: "List a directory of a volume (default its root)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, v, err := volumeNamed(cmd, args[0])
			if err != nil {
				return err
			}
			p := "/"
			if len(args) == 2 {
				p = args[1]
			}
			ents, err := c.ListVolume(cmd.Context(), v, p, depth)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(cmd.OutOrStdout(), ents)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MODE\tUID\tGID\tSIZE\tMODIFIED\tPATH")
			for _, e := range ents {
				name := e.Path
				if e.Type == "directory" {
					name += "/"
				} else if e.Type == "symlink" {
					name += " -> " + e.Target
				}
				fmt.Fprintf(tw, "%04o\t%d\t%d\t%d\t%s\t%s\n", e.Mode, e.UID, e.GID, e.Size, e.Mtime.Local().Format("2006-01-02 15:04"), name)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&depth, "depth", 1, "how many levels of directories to list")
	return cmd
}

func newVolumeCpCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file into or out of a volume (NAME:/path names the volume side; - is stdin/stdout)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcVol, srcPath, srcRemote := strings.Cut(args[0], ":")
			dstVol, dstPath, dstRemote := strings.Cut(args[1], ":")
			switch {
			case srcRemote && !dstRemote:
				c, v, err := volumeNamed(cmd, srcVol)
				if err != nil {
					return err
				}
				w, done, err := localWriter(cmd, args[1])
				if err != nil {
					return err
				}
				defer done()
				return c.ReadVolumeFile(cmd.Context(), v, srcPath, w)
			case dstRemote && !srcRemote:
				c, v, err := volumeNamed(cmd, dstVol)
				if err != nil {
					return err
				}
				r, done, err := localReader(cmd, args[0])
				if err != nil {
					return err
				}
				defer done()
				_, err = c.WriteVolumeFile(cmd.Context(), v, dstPath, r, force)
				return err
			}
			return fmt.Errorf("exactly one of SRC and DST must be VOLUME:/path")
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "replace a file that exists in the volume")
	return cmd
}

// volumeNamed finds the team's volume of that name, with its token.
func volumeNamed(cmd *cobra.Command, name string) (*client.Client, client.Volume, error) {
	c, err := apiClient()
	if err != nil {
		return nil, client.Volume{}, err
	}
	v, err := c.VolumeByName(cmd.Context(), name)
	return c, v, err
}

// volumeMounts parses --volume NAME:/PATH[:ro] flags.
func volumeMounts(flags []string) ([]client.VolumeMount, error) {
	var out []client.VolumeMount
	for _, f := range flags {
		name, rest, ok := strings.Cut(f, ":")
		if !ok || name == "" || !strings.HasPrefix(rest, "/") {
			return nil, fmt.Errorf("%q: want NAME:/PATH or NAME:/PATH:ro", f)
		}
		m := client.VolumeMount{Name: name, Path: rest}
		if p, ok := strings.CutSuffix(rest, ":ro"); ok {
			m.Path, m.ReadOnly = p, true
		}
		out = append(out, m)
	}
	return out, nil
}
