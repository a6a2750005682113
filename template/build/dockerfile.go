package build

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// TemplatePrefix marks a Dockerfile's FROM of a roost template:
// "FROM roost:NAME" or "FROM roost:NAME:TAG". Every other reference is an
// image.
const TemplatePrefix = "roost:"

// defaultShell runs a Dockerfile's shell-form RUN, as Docker's does.
var defaultShell = []string{"/bin/sh", "-c"}

// ParseDockerfile turns a Dockerfile into a Spec: one stage per FROM, the
// last stage the template, CMD and ENTRYPOINT of the last stage its start
// command. buildArgs override the defaults of its ARGs; context is the
// blob (a tar of the context directory) COPY and ADD read. Errors wrap
// errdefs.ErrInvalid and name the line.
func ParseDockerfile(src []byte, buildArgs map[string]string, context content.Digest) (Spec, error) {
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		return Spec{}, dockerfileErr(err)
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return Spec{}, dockerfileErr(err)
	}
	if len(stages) == 0 {
		return Spec{}, invalidf("dockerfile: no FROM")
	}
	p := &dfParser{lex: shell.NewLex(res.EscapeToken), buildArgs: buildArgs, context: context, global: map[string]string{}}
	if err := p.metaArgs(metaArgs); err != nil {
		return Spec{}, err
	}
	spec := Spec{Source: "dockerfile"}
	for i, st := range stages {
		s, err := p.stage(i, st, stages[:i])
		if err != nil {
			return Spec{}, err
		}
		spec.Stages = append(spec.Stages, s)
	}
	spec.StartCmd = p.startCmd
	if err := spec.Validate(); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// dfParser holds what carries from one instruction to the next.
type dfParser struct {
	lex       *shell.Lex
	buildArgs map[string]string
	context   content.Digest
	global    map[string]string // ARGs before the first FROM, with values

	// Per stage.
	args     map[string]string // the stage's ARGs with values
	env      map[string]string // the stage's ENVs
	shell    []string
	startCmd string
	entry    []string // ENTRYPOINT, exec form (nil: none)
	cmd      []string // CMD, exec form
	shellEP  bool     // ENTRYPOINT is in shell form: CMD is ignored
	userSet  bool     // the stage has had a USER
}

func (p *dfParser) metaArgs(args []instructions.ArgCommand) error {
	for _, a := range args {
		if err := a.Expand(p.expander(p.global)); err != nil {
			return lineErr(a.Location(), err)
		}
		for _, kv := range a.Args {
			if v, ok := p.buildArgs[kv.Key]; ok {
				p.global[kv.Key] = v
			} else if kv.Value != nil {
				p.global[kv.Key] = *kv.Value
			} else {
				p.global[kv.Key] = ""
			}
		}
	}
	return nil
}

func (p *dfParser) stage(i int, st instructions.Stage, earlier []instructions.Stage) (Stage, error) {
	p.args, p.env, p.shell = map[string]string{}, map[string]string{}, defaultShell
	p.entry, p.cmd, p.shellEP, p.startCmd, p.userSet = nil, nil, false, "", false
	base, err := p.word(st.BaseName, p.global)
	if err != nil {
		return Stage{}, lineErr(st.Location, err)
	}
	if st.Platform != "" {
		return Stage{}, lineErr(st.Location, errors.New("FROM --platform is not supported: roost builds for its host's platform"))
	}
	out := Stage{Name: st.Name}
	if out.Name == "" {
		out.Name = strconv.Itoa(i) // stage names start with a letter: no clash
	}
	out.From, err = resolveFrom(base, earlier)
	if err != nil {
		return Stage{}, lineErr(st.Location, err)
	}
	for _, c := range st.Commands {
		steps, err := p.command(c, earlier)
		if err != nil {
			return Stage{}, lineErr(c.Location(), err)
		}
		out.Steps = append(out.Steps, steps...)
	}
	p.startCmd = p.start()
	return out, nil
}

// resolveFrom reads a FROM's reference: an earlier stage, a roost template
// (TemplatePrefix), or an image.
func resolveFrom(base string, earlier []instructions.Stage) (From, error) {
	if i, ok := instructions.HasStage(earlier, base); ok {
		return From{Stage: earlier[i].Name}, nil
	}
	switch {
	case base == "":
		return From{}, errors.New("FROM without an image")
	case strings.EqualFold(base, "scratch"):
		return From{}, errors.New("FROM scratch is not supported: start from an image or a template")
	case strings.HasPrefix(base, TemplatePrefix):
		name := strings.TrimPrefix(base, TemplatePrefix)
		if name == "" {
			return From{}, errors.New("FROM roost: without a template name")
		}
		return From{Template: name}, nil
	}
	return From{Image: base}, nil
}

func (p *dfParser) command(c instructions.Command, earlier []instructions.Stage) ([]Step, error) {
	line := 0
	if loc := c.Location(); len(loc) > 0 {
		line = loc[0].Start.Line
	}
	if e, ok := c.(instructions.SupportsSingleWordExpansion); ok {
		if err := e.Expand(p.expander(p.scope())); err != nil {
			return nil, err
		}
	}
	steps, err := p.steps(c, earlier)
	for i := range steps {
		steps[i].Line = line
	}
	return steps, err
}

func (p *dfParser) steps(c instructions.Command, earlier []instructions.Stage) ([]Step, error) {
	switch c := c.(type) {
	case *instructions.RunCommand:
		return p.run(c)
	case *instructions.CopyCommand:
		return p.copy(c, earlier)
	case *instructions.AddCommand:
		return p.add(c)
	case *instructions.EnvCommand:
		var args []string
		for _, kv := range c.Env {
			args = append(args, kv.Key, kv.Value)
			p.env[kv.Key] = kv.Value
		}
		return []Step{{Type: StepEnv, Args: args}}, nil
	case *instructions.ArgCommand:
		for _, kv := range c.Args {
			p.args[kv.Key] = p.argValue(kv)
		}
		return nil, nil
	case *instructions.WorkdirCommand:
		return []Step{{Type: StepWorkdir, Args: []string{c.Path}}}, nil
	case *instructions.UserCommand:
		p.userSet = true
		return []Step{{Type: StepUser, Args: []string{c.User}}}, nil
	case *instructions.ShellCommand:
		p.shell = c.Shell
		return nil, nil
	case *instructions.CmdCommand:
		p.cmd = p.argv(c.ShellDependantCmdLine)
		return nil, nil
	case *instructions.EntrypointCommand:
		p.entry, p.shellEP = p.argv(c.ShellDependantCmdLine), c.PrependShell
		p.cmd = nil // Docker: a new ENTRYPOINT drops the CMD before it
		return nil, nil
	case *instructions.LabelCommand, *instructions.ExposeCommand, *instructions.MaintainerCommand:
		return nil, nil // metadata of images that a template has no use for
	}
	return nil, fmt.Errorf("%s is not supported by roost's builder", strings.ToUpper(c.Name()))
}

// argValue is an ARG's value: the build argument, its default, or the
// global ARG of that name.
func (p *dfParser) argValue(kv instructions.KeyValuePairOptional) string {
	if v, ok := p.buildArgs[kv.Key]; ok {
		return v
	}
	if kv.Value != nil {
		return *kv.Value
	}
	return p.global[kv.Key]
}

func (p *dfParser) run(c *instructions.RunCommand) ([]Step, error) {
	for _, f := range c.FlagsUsed {
		if f != "network" {
			return nil, fmt.Errorf("RUN --%s is not supported", f)
		}
	}
	if len(c.Files) > 0 {
		return nil, errors.New("RUN with a here-document is not supported")
	}
	argv := p.argv(c.ShellDependantCmdLine)
	display := shellJoin(c.CmdLine)
	if c.PrependShell {
		display = strings.Join(c.CmdLine, " ")
	}
	// --network=none runs the step without internet; "default" (and no
	// flag) with it. A build sandbox never has the host's network.
	network := instructions.GetNetwork(c)
	if network != instructions.NetworkNone && network != instructions.NetworkDefault {
		return nil, fmt.Errorf("RUN --network=%s is not supported (none or default)", network)
	}
	step := Step{Type: StepRun, Args: []string{display}, Exec: argv, NoInternet: network == instructions.NetworkNone}
	if !p.userSet {
		// Until the Dockerfile says USER, RUN is root's, as in the images
		// Dockerfiles are written for, also over a template whose user is
		// not root (roost:base's is "user"); the template keeps its user.
		step.Args = append(step.Args, "root")
	}
	if len(p.args) > 0 {
		step.Env = maps.Clone(p.args)
	}
	return []Step{step}, nil
}

// argv is a command line as the process's arguments: the shell form
// handed to the current SHELL.
func (p *dfParser) argv(c instructions.ShellDependantCmdLine) []string {
	if !c.PrependShell {
		return c.CmdLine
	}
	return append(append([]string(nil), p.shell...), strings.Join(c.CmdLine, " "))
}

// start is the stage's start command: ENTRYPOINT then CMD, as a shell
// command line.
func (p *dfParser) start() string {
	if p.shellEP {
		return p.entry[len(p.entry)-1] // "sh -c CMDLINE": CMD is ignored, as Docker does
	}
	all := append(append([]string(nil), p.entry...), p.cmd...)
	if len(all) == 0 {
		return ""
	}
	if len(p.entry) == 0 && len(all) == len(p.shell)+1 && slices.Equal(all[:len(p.shell)], p.shell) {
		return all[len(all)-1] // a shell-form CMD
	}
	return shellJoin(all)
}

func (p *dfParser) copy(c *instructions.CopyCommand, earlier []instructions.Stage) ([]Step, error) {
	switch {
	case c.Link:
		// --link only changes how BuildKit caches the layer.
	case c.Parents:
		return nil, errors.New("COPY --parents is not supported")
	case len(c.ExcludePatterns) > 0:
		return nil, errors.New("COPY --exclude is not supported")
	}
	from := ""
	if c.From != "" {
		i, ok := instructions.HasStage(earlier, c.From)
		if !ok {
			n, err := strconv.Atoi(c.From)
			if err != nil || n < 0 || n >= len(earlier) {
				return nil, fmt.Errorf("COPY --from=%s: no such earlier stage (copying from an image is not supported)", c.From)
			}
			i = n
		}
		from = earlier[i].Name
		if from == "" {
			from = strconv.Itoa(i)
		}
	}
	return p.copySteps(StepCopy, c.SourcesAndDest, c.Chown, c.Chmod, from)
}

func (p *dfParser) add(c *instructions.AddCommand) ([]Step, error) {
	switch {
	case c.Checksum != "", c.KeepGitDir != nil:
		return nil, errors.New("ADD --checksum and --keep-git-dir are not supported")
	case len(c.ExcludePatterns) > 0:
		return nil, errors.New("ADD --exclude is not supported")
	case c.Unpack != nil && !*c.Unpack:
		return p.copySteps(StepCopy, c.SourcesAndDest, c.Chown, c.Chmod, "")
	}
	for _, src := range c.SourcePaths {
		if strings.Contains(src, "://") || strings.HasPrefix(src, "git@") {
			return nil, fmt.Errorf("ADD %s: remote sources are not supported: download in a RUN step (curl, git)", src)
		}
	}
	return p.copySteps(StepAdd, c.SourcesAndDest, c.Chown, c.Chmod, "")
}

func (p *dfParser) copySteps(typ string, sd instructions.SourcesAndDest, chown, chmod, from string) ([]Step, error) {
	if len(sd.SourceContents) > 0 {
		return nil, fmt.Errorf("%s with a here-document is not supported", typ)
	}
	if len(sd.SourcePaths) > 1 && !strings.HasSuffix(sd.DestPath, "/") {
		return nil, fmt.Errorf("%s with more than one source: the destination must be a directory and end with /", typ)
	}
	if from == "" && p.context == "" {
		return nil, fmt.Errorf("%s from the build context, but the build has no context", typ)
	}
	owner := chown
	if owner == "" {
		owner = "0:0" // Docker copies as root whatever USER says
	}
	var steps []Step
	for _, src := range sd.SourcePaths {
		s := Step{Type: typ, Args: []string{src, sd.DestPath, owner, chmod}}
		if from != "" {
			s.FromStage = from
		} else {
			s.Files = p.context
		}
		steps = append(steps, s)
	}
	return steps, nil
}

// scope is what ${NAME} means in the stage: its ARGs, under its ENVs.
func (p *dfParser) scope() map[string]string {
	m := maps.Clone(p.args)
	maps.Copy(m, p.env)
	return m
}

func (p *dfParser) expander(vars map[string]string) instructions.SingleWordExpander {
	return func(word string) (string, error) { return p.word(word, vars) }
}

func (p *dfParser) word(word string, vars map[string]string) (string, error) {
	env := make([]string, 0, len(vars))
	for k, v := range vars {
		env = append(env, k+"="+v)
	}
	out, _, err := p.lex.ProcessWord(word, shell.EnvsFromSlice(env))
	return out, err
}

// lineErr names the line of loc in err, which it makes ErrInvalid.
func lineErr(loc []parser.Range, err error) error {
	if len(loc) == 0 {
		return fmt.Errorf("dockerfile: %w: %w", err, errdefs.ErrInvalid)
	}
	return fmt.Errorf("dockerfile line %d: %w: %w", loc[0].Start.Line, err, errdefs.ErrInvalid)
}

// dockerfileErr is a parser's error with its line, when it has one.
func dockerfileErr(err error) error {
	var le *parser.LocationError
	if errors.As(err, &le) && len(le.Locations) > 0 && len(le.Locations[0]) > 0 {
		return lineErr(le.Locations[0], errors.Unwrap(le))
	}
	var ue *instructions.UnknownInstructionError
	if errors.As(err, &ue) {
		return fmt.Errorf("dockerfile line %d: unknown instruction %s: %w", ue.Line, ue.Instruction, errdefs.ErrInvalid)
	}
	return fmt.Errorf("dockerfile: %w: %w", err, errdefs.ErrInvalid)
}
