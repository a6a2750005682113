package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"roost.dev/roost/client"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/buildcontext"
	"roost.dev/roost/template/content"
)

// buildPoll is how often a build's status is asked for.
const buildPoll = 300 * time.Millisecond

func newTemplateBuildCmd() *cobra.Command {
	var (
		tag, dockerfile string
		buildArgs       []string
		noCache         bool
	)
	cmd := &cobra.Command{
		Use:   "build -t NAME[:TAG] [-f Dockerfile] [--build-arg K=V] [--no-cache] [CONTEXT]",
		Short: "Build a template from a Dockerfile, streaming the build's log",
		Long: `Build a template from a Dockerfile on the control plane's hosts. The
Dockerfile is parsed here (FROM an image, or FROM roost:NAME for a roost
template; RUN, COPY, ADD, ENV, ARG, WORKDIR, USER; CMD and ENTRYPOINT become
the start command), the context directory (default .) is packed, less what
its .dockerignore excludes, and uploaded when a COPY or ADD reads it, and
the build's log follows. Unchanged steps are cached; --no-cache runs all.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			contextDir := "."
			if len(args) == 1 {
				contextDir = args[0]
			}
			if dockerfile == "" {
				dockerfile = filepath.Join(contextDir, "Dockerfile")
			}
			vals, err := buildArgValues(buildArgs)
			if err != nil {
				return err
			}
			c, err := apiClient()
			if err != nil {
				return err
			}
			return buildDockerfile(cmd.Context(), cmd.OutOrStdout(), cmd.InOrStdin(), c, tag, dockerfile, contextDir, vals, noCache)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&tag, "tag", "t", "", "template name, with an optional :TAG (default tag: default)")
	f.StringVarP(&dockerfile, "file", "f", "", "the Dockerfile (default CONTEXT/Dockerfile; - reads stdin)")
	f.StringArrayVar(&buildArgs, "build-arg", nil, "build argument K=V, or K for $K (repeatable)")
	f.BoolVar(&noCache, "no-cache", false, "run every step again, cached or not")
	_ = cmd.MarkFlagRequired("tag")
	return cmd
}

// contextPlaceholder stands for the context in a first parse, which
// tells whether the Dockerfile reads its context at all.
var contextPlaceholder = content.FromBytes([]byte("roost: the build context, not packed yet"))

func buildDockerfile(ctx context.Context, out io.Writer, stdin io.Reader, c *client.Client, name, dockerfile, contextDir string, args map[string]string, noCache bool) error {
	src, err := readDockerfile(dockerfile, stdin)
	if err != nil {
		return err
	}
	spec, err := build.ParseDockerfile(src, args, contextPlaceholder)
	if err != nil {
		return fmt.Errorf("%s: %w", dockerfile, err)
	}
	var uploads []pendingUpload
	if readsFiles(spec, contextPlaceholder) {
		exclude, err := buildcontext.Ignored(contextDir)
		if err != nil {
			return err
		}
		packed, err := buildcontext.Pack(ctx, contextDir, exclude, "")
		if err != nil {
			return err
		}
		defer packed.Close()
		if spec, err = build.ParseDockerfile(src, args, content.Digest("sha256:"+packed.SHA256)); err != nil {
			return fmt.Errorf("%s: %w", dockerfile, err)
		}
		uploads = append(uploads, pendingUpload{what: "context " + contextDir, packed: packed})
	}
	spec.Force = noCache
	return runBuild(ctx, out, c, name, spec, uploads)
}

func readDockerfile(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(path)
}

// readsFiles says whether a step of spec reads the files blob d.
func readsFiles(spec build.Spec, d content.Digest) bool {
	for _, st := range spec.Stages {
		for _, s := range st.Steps {
			if s.Files == d {
				return true
			}
		}
	}
	return false
}

// buildArgValues parses --build-arg K=V, and K alone for $K (left out
// when unset, as Docker does).
func buildArgValues(kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return nil, fmt.Errorf("--build-arg %q: want K=V or K", kv)
		}
		if !ok {
			if v, ok = os.LookupEnv(k); !ok {
				continue
			}
		}
		out[k] = v
	}
	return out, nil
}

// pendingUpload is a file a build reads, to upload before it starts.
type pendingUpload struct {
	what   string
	packed *buildcontext.Packed
}

// runBuild makes a build of template name through the API, uploads its
// files, starts it with spec and follows it to its end.
func runBuild(ctx context.Context, out io.Writer, c *client.Client, name string, spec build.Spec, uploads []pendingUpload) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	b, err := c.NewTemplate(ctx, client.NewTemplateOptions{Name: name})
	if err != nil {
		return fmt.Errorf("new template %s: %w", name, err)
	}
	for _, u := range uploads {
		if _, err := uploadFile(ctx, out, c, b.TemplateID, u.what, u.packed); err != nil {
			return err
		}
	}
	if err := c.StartBuild(ctx, b.TemplateID, b.BuildID, spec); err != nil {
		return fmt.Errorf("start build of %s: %w", name, err)
	}
	fmt.Fprintf(out, "building %s (template %s, build %s)\n", name, b.TemplateID, b.BuildID)
	return followBuild(ctx, out, c, name, b, countSteps(spec))
}

func countSteps(spec build.Spec) int {
	n := 0
	for _, st := range spec.Stages {
		n += len(st.Steps)
	}
	return n
}

// followBuild prints a build's log entries as they come and returns when
// it ends: nil when ready, the failed step's error otherwise.
func followBuild(ctx context.Context, out io.Writer, c *client.Client, name string, b client.TemplateBuild, steps int) error {
	offset := 0
	for {
		st, err := c.BuildStatus(ctx, b.TemplateID, b.BuildID, offset)
		if err != nil {
			return fmt.Errorf("build of %s: %w", name, err)
		}
		for _, e := range st.LogEntries {
			fmt.Fprintln(out, formatEntry(e, steps))
		}
		offset += len(st.LogEntries)
		switch st.Status {
		case client.BuildReady:
			fmt.Fprintf(out, "template %s is ready\n", name)
			return nil
		case client.BuildError:
			return buildFailure(out, name, st, offset, steps)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("build of %s goes on without us: %w", name, ctx.Err())
		case <-time.After(buildPoll):
		}
	}
}

// buildFailure is a failed build's error; its reason's log entries are
// printed unless the log printed anything already.
func buildFailure(out io.Writer, name string, st client.BuildStatus, printed, steps int) error {
	if st.Reason == nil {
		return fmt.Errorf("build of %s failed", name)
	}
	if printed == 0 {
		for _, e := range st.Reason.LogEntries {
			fmt.Fprintln(out, formatEntry(e, steps))
		}
	}
	if st.Reason.Step != "" && !strings.HasPrefix(st.Reason.Message, "step ") {
		return fmt.Errorf("build of %s failed at %s: %s", name, stepLabel(st.Reason.Step, steps), st.Reason.Message)
	}
	return fmt.Errorf("build of %s failed: %s", name, st.Reason.Message)
}

// formatEntry is one log line: "step 3/7 RUN make", "base FROM ...".
func formatEntry(e client.BuildLogEntry, steps int) string {
	line := e.Message
	if e.Step != "" {
		line = stepLabel(e.Step, steps) + " " + line
	}
	if e.Level == "error" || e.Level == "warn" {
		line = strings.ToUpper(e.Level) + " " + line
	}
	return line
}

// stepLabel names a step: its number of all ("step 3/7"), or its name
// (base, finalize).
func stepLabel(step string, steps int) string {
	if _, err := strconv.Atoi(step); err == nil && steps > 0 {
		return fmt.Sprintf("step %s/%d", step, steps)
	}
	return step
}
