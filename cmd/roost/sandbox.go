package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"roost.dev/roost/client"
)

// The CLI finds the control plane through these, like the E2B variables.
const (
	apiURLEnv     = "ROOST_API_URL"
	defaultAPIURL = "http://127.0.0.1:3000"
)

// apiClient reads ROOST_API_URL and ROOST_API_KEY; without a key it falls
// back to the one `roost up` stored in its default data directory.
func apiClient() (*client.Client, error) {
	base := os.Getenv(apiURLEnv)
	if base == "" {
		base = defaultAPIURL
	}
	key := os.Getenv(apiKeyEnv)
	if key == "" {
		b, err := os.ReadFile(filepath.Join("/var/lib/roost", apiKeyFile))
		if err != nil {
			return nil, fmt.Errorf("no API key: set $%s (roost up prints it)", apiKeyEnv)
		}
		key = strings.TrimSpace(string(b))
	}
	return client.New(base, key), nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newSandboxCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{Use: "sandbox", Aliases: []string{"sb"}, Short: "Create, list and manage sandboxes through the API"}
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON for scripts instead of tables")

	var (
		tpl, timeout string
		metadata     []string
		envs         []string
		noInternet   bool
		volumes      []string
	)
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a sandbox and print its ID",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			o := client.CreateOptions{Template: tpl}
			if o.Timeout, err = time.ParseDuration(timeout); err != nil {
				return fmt.Errorf("--timeout: %w", err)
			}
			if o.Metadata, err = pairs(metadata); err != nil {
				return fmt.Errorf("--metadata: %w", err)
			}
			if o.Env, err = pairs(envs); err != nil {
				return fmt.Errorf("--env: %w", err)
			}
			if noInternet {
				off := false
				o.AllowInternet = &off
			}
			if o.Volumes, err = volumeMounts(volumes); err != nil {
				return fmt.Errorf("--volume: %w", err)
			}
			stop := createProgress(cmd.Context(), cmd.ErrOrStderr(), c, tpl)
			sb, err := c.Create(cmd.Context(), o)
			stop()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sb)
			}
			fmt.Fprintln(cmd.OutOrStdout(), sb.ID)
			return nil
		},
	}
	create.Flags().StringVarP(&tpl, "template", "t", "base", "template")
	create.Flags().StringVar(&timeout, "timeout", "5m", "lifetime before the sandbox is killed")
	create.Flags().StringArrayVar(&metadata, "metadata", nil, "metadata KEY=VALUE (repeatable)")
	create.Flags().StringArrayVarP(&envs, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	create.Flags().BoolVar(&noInternet, "no-internet", false, "no outbound internet access")
	create.Flags().StringArrayVarP(&volumes, "volume", "v", nil, "mount a volume: NAME:/PATH, or NAME:/PATH:ro read-only (repeatable)")

	var states, filter []string
	list := &cobra.Command{
		Use:   "list",
		Short: "List sandboxes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			md, err := pairs(filter)
			if err != nil {
				return fmt.Errorf("--metadata: %w", err)
			}
			sbs, err := c.List(cmd.Context(), client.ListOptions{States: states, Metadata: md})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sbs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tTEMPLATE\tSTATE\tCPU\tMEMORY\tSTARTED\tENDS\tMETADATA")
			for _, s := range sbs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d MiB\t%s\t%s\t%s\n", s.ID, s.TemplateID, s.State, s.CPUCount, s.MemoryMB,
					s.StartedAt.Local().Format("15:04:05"), s.EndAt.Local().Format("15:04:05"), joinPairs(s.Metadata))
			}
			return w.Flush()
		},
	}
	list.Flags().StringSliceVar(&states, "state", nil, "running and/or paused (default both)")
	list.Flags().StringArrayVar(&filter, "metadata", nil, "only sandboxes with metadata KEY=VALUE (repeatable)")

	get := &cobra.Command{
		Use: "get ID", Short: "Show a sandbox", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			sb, err := c.Describe(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), sb)
		},
	}
	hibernate := &cobra.Command{
		Use:   "hibernate ID",
		Short: "Hibernate a sandbox: memory to disk, its processes freed (resume restores it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := apiClient()
			if err != nil {
				return err
			}
			stop := progress(cmd.ErrOrStderr(), "hibernating sandbox")
			sb, err := c.Hibernate(cmd.Context(), args[0])
			stop()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sb)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s hibernated (%s runtime); resume restores it\n", sb.ID, sb.Runtime)
			return nil
		},
	}
	simple := func(use, short string, fn func(context.Context, *client.Client, string) error) *cobra.Command {
		return &cobra.Command{Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := apiClient()
				if err != nil {
					return err
				}
				return fn(cmd.Context(), c, args[0])
			}}
	}
	kill := simple("kill", "Destroy a sandbox", func(ctx context.Context, c *client.Client, id string) error { return c.Kill(ctx, id) })
	keepMemory := true
	pause := simple("pause", "Pause a sandbox (its processes kept; with --keep-memory=false only its files)", func(ctx context.Context, c *client.Client, id string) error {
		return c.Pause(ctx, id, keepMemory)
	})
	pause.Flags().BoolVar(&keepMemory, "keep-memory", true, "keep the sandbox's processes and memory (false: they end, its files stay, resume boots it afresh)")
	resume := simple("resume", "Resume a paused sandbox", func(ctx context.Context, c *client.Client, id string) error {
		_, err := c.Resume(ctx, id, 0)
		return err
	})
	setTimeout := &cobra.Command{
		Use: "timeout ID DURATION", Short: "Set how long from now a sandbox lives (e.g. 30m)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := time.ParseDuration(args[1])
			if err != nil {
				return err
			}
			c, err := apiClient()
			if err != nil {
				return err
			}
			return c.SetTimeout(cmd.Context(), args[0], d)
		},
	}
	cmd.AddCommand(create, list, get, kill, pause, resume, hibernate, newSnapshotCmd(&asJSON), newForkCmd(&asJSON), setTimeout, newMetricsCmd(&asJSON))
	return cmd
}

func newExecCmd() *cobra.Command {
	var user, dir string
	var envs []string
	cmd := &cobra.Command{
		Use:   "exec ID -- COMMAND [ARG...]",
		Short: "Run a command in a sandbox, stream its output, exit with its code",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, sb, err := sandboxFor(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			env, err := pairs(envs)
			if err != nil {
				return err
			}
			code, err := c.Envd(sb).Exec(cmd.Context(), client.Command{Args: args[1:], Env: env, Dir: dir, User: user}, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "run as this user (default: the template's)")
	cmd.Flags().StringVarP(&dir, "workdir", "w", "", "working directory")
	cmd.Flags().StringArrayVarP(&envs, "env", "e", nil, "environment variable KEY=VALUE (repeatable)")
	return cmd
}

func newShellCmd() *cobra.Command {
	var user string
	cmd := &cobra.Command{
		Use:   "shell ID [COMMAND...]",
		Short: "Open an interactive terminal in a sandbox",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, sb, err := sandboxFor(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			t := client.Terminal{Size: client.Size{Cols: 80, Rows: 24}, Command: args[1:], User: user}
			fd := int(os.Stdin.Fd())
			if term.IsTerminal(fd) {
				if w, h, err := term.GetSize(fd); err == nil {
					t.Size = client.Size{Cols: uint16(w), Rows: uint16(h)}
				}
				old, err := term.MakeRaw(fd)
				if err != nil {
					return err
				}
				defer term.Restore(fd, old)
				resize := make(chan client.Size, 1)
				winch := make(chan os.Signal, 1)
				signal.Notify(winch, syscall.SIGWINCH)
				defer signal.Stop(winch)
				go func() {
					for range winch {
						if w, h, err := term.GetSize(fd); err == nil {
							select {
							case resize <- client.Size{Cols: uint16(w), Rows: uint16(h)}:
							default:
							}
						}
					}
				}()
				t.Resize = resize
			}
			code, err := c.Envd(sb).Shell(cmd.Context(), t, os.Stdin, os.Stdout)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&user, "user", "u", "", "run as this user (default: the template's)")
	return cmd
}

func newCpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file into or out of a sandbox (ID:/path names the sandbox side; - is stdin/stdout)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcID, srcPath, srcRemote := strings.Cut(args[0], ":")
			dstID, dstPath, dstRemote := strings.Cut(args[1], ":")
			switch {
			case srcRemote && !dstRemote:
				c, sb, err := sandboxFor(cmd.Context(), srcID)
				if err != nil {
					return err
				}
				w, done, err := localWriter(cmd, args[1])
				if err != nil {
					return err
				}
				defer done()
				return c.Envd(sb).Download(cmd.Context(), srcPath, w)
			case dstRemote && !srcRemote:
				c, sb, err := sandboxFor(cmd.Context(), dstID)
				if err != nil {
					return err
				}
				r, done, err := localReader(cmd, args[0])
				if err != nil {
					return err
				}
				defer done()
				return c.Envd(sb).Upload(cmd.Context(), dstPath, r)
			default:
				return errors.New("exactly one of SRC and DST must name a sandbox (ID:/path)")
			}
		},
	}
}

func newPortsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ports ID",
		Short: "List the TCP ports servers in a sandbox listen on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, sb, err := sandboxFor(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			ports, err := c.Envd(sb).Ports(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ports)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "PORT\tADDRESS\tFORWARDED")
			for _, p := range ports {
				fmt.Fprintf(w, "%d\t%s\t%v\n", p.Port, p.Address, p.Forwarded)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// sandboxFor fetches a sandbox, with the envd token its envd needs.
func sandboxFor(ctx context.Context, id string) (*client.Client, client.Sandbox, error) {
	c, err := apiClient()
	if err != nil {
		return nil, client.Sandbox{}, err
	}
	sb, err := c.Get(ctx, id)
	return c, sb, err
}

// localWriter is the local side of a copy out: the file at path, created,
// or standard output for "-"; done closes what it opened.
func localWriter(cmd *cobra.Command, path string) (w io.Writer, done func(), err error) {
	if path == "-" {
		return cmd.OutOrStdout(), func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// localReader is the local side of a copy in: the file at path, or
// standard input for "-"; done closes what it opened.
func localReader(cmd *cobra.Command, path string) (r io.Reader, done func(), err error) {
	if path == "-" {
		return cmd.InOrStdin(), func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// pairs parses KEY=VALUE arguments.
func pairs(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not KEY=VALUE", kv)
		}
		out[k] = v
	}
	return out, nil
}

func joinPairs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ",")
}

// progress shows what a long operation is doing, on a terminal only.
func progress(w io.Writer, what string) (stop func()) {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		t0 := time.Now()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-tick.C:
				fmt.Fprintf(w, "\r%s… %.1fs", what, time.Since(t0).Seconds())
			}
		}
	}()
	return func() { close(done); time.Sleep(10 * time.Millisecond) }
}

// exitCode makes roost exit with a remote command's code.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// apiKeyEnv sets the API key the CLI sends and `roost up` accepts.
const apiKeyEnv = "ROOST_API_KEY"

// apiKeyFile, in roost up's data directory, holds the key it generated.
const apiKeyFile = "api-key"
