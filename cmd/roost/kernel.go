package main

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/spf13/cobra"

	"roost.dev/roost/runtime/qemu"
)

func newKernelCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kernel",
		Short: "Manage the guest kernel of VM sandboxes",
	}
	var (
		dataDir string
		install bool
		level   slog.LevelVar
	)
	prepare := &cobra.Command{
		Use:   "prepare",
		Short: "Prepare the qemu runtime's guest kernel ahead of the first sandbox",
		Long: `Prepare the guest kernel the qemu runtime boots: Debian's packaged kernel
(from /boot and /lib/modules), extracted to an uncompressed vmlinux, and an
initramfs with its virtio modules and roost-guest, under
<data-dir>/runtime/qemu/kernels. With --install, the linux-image-amd64
package is installed through apt first when the host has no kernel to use.
The agent does this itself on its first VM sandbox; preparing ahead keeps
that create fast and reports a missing kernel early.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := filepath.Abs(dataDir)
			if err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			d := qemu.New(qemuConfig(dir), newLogger(false, &level))
			version, err := d.Prepare(cmd.Context(), install)
			if err != nil {
				return fmt.Errorf("prepare guest kernel: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "guest kernel ready:", version)
			return nil
		},
	}
	f := prepare.Flags()
	f.StringVar(&dataDir, "data-dir", "/var/lib/roost", "data directory, as given to roost agent")
	f.BoolVar(&install, "install", false, "install Debian's kernel package (linux-image-amd64) through apt when the host has none")
	f.TextVar(&level, "log-level", &level, "log level: debug, info, warn, error")
	cmd.AddCommand(prepare)
	return cmd
}
