package build

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"roost.dev/roost/template/content"
)

// e2bStart is E2B's TemplateBuildStartV2 body. The SDK sends more fields
// in its steps (forceUpload, resolveSymlinks, gzip): they concern the
// upload, which is done by then, and are ignored.
type e2bStart struct {
	FromImage         string       `json:"fromImage"`
	FromTemplate      string       `json:"fromTemplate"`
	FromImageRegistry *e2bRegistry `json:"fromImageRegistry"`
	Force             bool         `json:"force"`
	Steps             []e2bStep    `json:"steps"`
	StartCmd          string       `json:"startCmd"`
	ReadyCmd          string       `json:"readyCmd"`
}

type e2bRegistry struct {
	Type     string `json:"type"`
	Username string `json:"username"`
	Password string `json:"password"`
}

type e2bStep struct {
	Type      string   `json:"type"`
	Args      []string `json:"args"`
	FilesHash string   `json:"filesHash"`
	Force     bool     `json:"force"`
}

// e2bBaseImages are the names of E2B's base image, which roost's base
// template stands in for: it is built like it (Debian, user "user" with
// passwordless sudo) and needs no registry.
var e2bBaseImages = map[string]bool{"e2bdev/base": true, "e2bdev/base:latest": true, "docker.io/e2bdev/base": true, "docker.io/e2bdev/base:latest": true}

// FromE2B turns E2B's TemplateBuildStartV2 body into a one-stage Spec.
// files maps a COPY step's filesHash to the digest of the tar uploaded
// for it (an error wrapping errdefs.ErrNotFound when nothing was). Step
// types are read case-insensitively, as E2B does. Registries of type aws
// and gcp are refused: roost pulls with basic credentials only. Every
// error wraps errdefs.ErrInvalid or is files'.
func FromE2B(body []byte, files func(hash string) (content.Digest, error)) (Spec, error) {
	var in e2bStart
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&in); err != nil {
		return Spec{}, invalidf("template build body: %v", err)
	}
	from, err := in.from()
	if err != nil {
		return Spec{}, err
	}
	steps := make([]Step, 0, len(in.Steps))
	for i, s := range in.Steps {
		step, err := s.step(files)
		if err != nil {
			return Spec{}, fmt.Errorf("step %d: %w", i+1, err)
		}
		steps = append(steps, step)
	}
	spec := Spec{
		Stages:   []Stage{{From: from, Steps: steps}},
		StartCmd: in.StartCmd,
		ReadyCmd: in.ReadyCmd,
		Force:    in.Force,
		Source:   "e2b",
	}
	if err := spec.Validate(); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

func (in e2bStart) from() (From, error) {
	switch {
	case in.FromImage != "" && in.FromTemplate != "":
		return From{}, invalidf("template build: both fromImage and fromTemplate")
	case in.FromTemplate != "":
		if in.FromImageRegistry != nil {
			return From{}, invalidf("template build: fromImageRegistry only goes with fromImage")
		}
		return From{Template: in.FromTemplate}, nil
	case in.FromImage == "":
		return From{}, invalidf("template build: want fromImage or fromTemplate")
	case e2bBaseImages[in.FromImage] && in.FromImageRegistry == nil:
		return From{Template: "base"}, nil
	}
	f := From{Image: in.FromImage}
	if r := in.FromImageRegistry; r != nil {
		switch r.Type {
		case "registry":
			f.Registry = &RegistryAuth{Username: r.Username, Password: r.Password}
		case "aws", "gcp":
			return From{}, invalidf("fromImageRegistry of type %q is not supported by roost: use type registry with a username and password (for example a token)", r.Type)
		default:
			return From{}, invalidf("fromImageRegistry: unknown type %q", r.Type)
		}
	}
	return f, nil
}

func (s e2bStep) step(files func(string) (content.Digest, error)) (Step, error) {
	step := Step{Type: strings.ToUpper(s.Type), Args: s.Args, Force: s.Force}
	if step.Args == nil {
		step.Args = []string{}
	}
	switch step.Type {
	case StepCopy:
		if s.FilesHash == "" {
			return Step{}, invalidf("COPY without filesHash")
		}
		d, err := files(s.FilesHash)
		if err != nil {
			return Step{}, fmt.Errorf("COPY files %s: %w", s.FilesHash, err)
		}
		step.Files = d
	case StepRun, StepEnv, StepWorkdir, StepUser:
	default:
		return Step{}, invalidf("unknown step type %q (want RUN, COPY, ENV, WORKDIR or USER)", s.Type)
	}
	if step.Type == StepRun && len(step.Args) == 2 && step.Args[1] == "" {
		step.Args = step.Args[:1] // the SDK's "no user"
	}
	return step, nil
}
