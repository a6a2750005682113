// Command roost is roost's single binary: the control plane (`roost
// server`), the host agent (`roost agent`), both in one process (`roost
// up`), template management and the CLI.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// version is set at build time: -ldflags '-X main.version=v1.2.3'.
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	var code exitCode
	if errors.As(err, &code) {
		os.Exit(int(code) & 0xff) // the remote command's own exit code
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "roost:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "roost",
		Short:         "Self-hostable sandboxes for AI agents and code execution",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newAgentCmd(), newTemplateCmd(), newVersionCmd(),
		newUpCmd(), newServerCmd(), newKernelCmd(), newSandboxCmd(), newSnapshotsCmd(), newExecCmd(), newShellCmd(), newCpCmd(), newPortsCmd(), newVolumeCmd(),
		newTeamCmd(), newKeyCmd(), newHostCmd(), newAuditCmd(), newEventsCmd(), newWebhookCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print roost's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "roost", buildVersion())
		},
	}
}

// buildVersion is the linked-in version, or the module version when roost
// was installed with `go install`.
func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// newLogger logs to stderr: JSON for the daemon, text for humans.
func newLogger(json bool, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if json {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
