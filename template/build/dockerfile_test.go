package build

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

var ctxBlob = content.FromBytes([]byte("context"))

func TestParseDockerfile(t *testing.T) {
	src := `# syntax=docker/dockerfile:1
ARG BASE=roost:base
ARG VERSION
FROM golang:1.23 AS deps
ARG VERSION
RUN go build -o /out/app-${VERSION} ./...
FROM ${BASE}
ARG GREETING=hello VERSION
ENV APP_HOME=/srv/app \
    MODE=prod
LABEL org.example=1
EXPOSE 8000
WORKDIR $APP_HOME
COPY --chown=user:user --chmod=0644 app/ ./
COPY --from=deps /out/app-${VERSION} /usr/local/bin/
ADD data.tar /data/
RUN ["echo", "${GREETING} world"]
SHELL ["/bin/bash", "-e", "-c"]
RUN echo $GREETING > /greeting
USER user
ENTRYPOINT ["python3", "-m"]
CMD ["http.server", "8000"]
`
	spec, err := ParseDockerfile([]byte(src), map[string]string{"VERSION": "1.2"}, ctxBlob)
	if err != nil {
		t.Fatal(err)
	}
	args := map[string]string{"GREETING": "hello", "VERSION": "1.2"}
	want := Spec{
		Stages: []Stage{
			{Name: "deps", From: From{Image: "golang:1.23"}, Steps: []Step{
				{Type: StepRun, Args: []string{"go build -o /out/app-${VERSION} ./...", "root"}, Exec: []string{"/bin/sh", "-c", "go build -o /out/app-${VERSION} ./..."}, Env: map[string]string{"VERSION": "1.2"}, Line: 6},
			}},
			{Name: "1", From: From{Template: "base"}, Steps: []Step{
				{Type: StepEnv, Args: []string{"APP_HOME", "/srv/app", "MODE", "prod"}, Line: 9},
				{Type: StepWorkdir, Args: []string{"/srv/app"}, Line: 13},
				{Type: StepCopy, Args: []string{"app/", "./", "user:user", "0644"}, Files: ctxBlob, Line: 14},
				{Type: StepCopy, Args: []string{"/out/app-1.2", "/usr/local/bin/", "0:0", ""}, FromStage: "deps", Line: 15},
				{Type: StepAdd, Args: []string{"data.tar", "/data/", "0:0", ""}, Files: ctxBlob, Line: 16},
				{Type: StepRun, Args: []string{"echo '${GREETING} world'", "root"}, Exec: []string{"echo", "${GREETING} world"}, Env: args, Line: 17},
				{Type: StepRun, Args: []string{"echo $GREETING > /greeting", "root"}, Exec: []string{"/bin/bash", "-e", "-c", "echo $GREETING > /greeting"}, Env: args, Line: 19},
				{Type: StepUser, Args: []string{"user"}, Line: 20},
			}},
		},
		StartCmd: "python3 -m http.server 8000",
		Source:   "dockerfile",
	}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("spec:\n got %+v\nwant %+v", spec, want)
	}
}

func TestParseDockerfileStartCmd(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"FROM a\nCMD python3 -m http.server\n", "python3 -m http.server"},
		{"FROM a\nCMD [\"echo\", \"a b\"]\n", "echo 'a b'"},
		{"FROM a\nENTRYPOINT nginx -g 'daemon off;'\nCMD [\"ignored\"]\n", "nginx -g 'daemon off;'"},
		{"FROM a\nCMD [\"x\"]\nENTRYPOINT [\"run\"]\n", "run"},
		{"FROM a AS one\nCMD [\"first\"]\nFROM b\n", ""},
	} {
		spec, err := ParseDockerfile([]byte(tc.src), nil, "")
		if err != nil {
			t.Fatalf("%q: %v", tc.src, err)
		}
		if spec.StartCmd != tc.want {
			t.Errorf("%q: start %q, want %q", tc.src, spec.StartCmd, tc.want)
		}
	}
}

// RUN --network=none runs without internet; default and no flag with it.
func TestParseDockerfileRunNetwork(t *testing.T) {
	spec, err := ParseDockerfile([]byte("FROM a\nRUN --network=none make\nRUN --network=default make\nRUN make\n"), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	steps := spec.Stages[0].Steps
	if len(steps) != 3 || !steps[0].NoInternet || steps[1].NoInternet || steps[2].NoInternet {
		t.Errorf("steps = %+v, want NoInternet on the first only", steps)
	}
}

func TestParseDockerfileRejects(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"syntax", "FROM a\nRUN echo\nCOPY onlyone\n", "line 3"},
		{"unknown", "FROM a\n\nFROBNICATE x\n", "line 3: unknown instruction: FROBNICATE"},
		{"volume", "FROM a\nVOLUME /data\n", "line 2: VOLUME is not supported"},
		{"healthcheck", "FROM a\nHEALTHCHECK CMD true\n", "line 2: HEALTHCHECK is not supported"},
		{"onbuild", "FROM a\nONBUILD RUN x\n", "line 2: ONBUILD is not supported"},
		{"stopsignal", "FROM a\nSTOPSIGNAL 9\n", "line 2: STOPSIGNAL is not supported"},
		{"no from", "RUN x\n", "no build stage"},
		{"scratch", "FROM scratch\n", "line 1: FROM scratch is not supported"},
		{"add url", "FROM a\nADD https://example.com/x /x\n", "line 2: ADD https://example.com/x: remote sources are not supported"},
		{"copy image", "FROM a\nCOPY --from=alpine:3 /x /x\n", "line 2: COPY --from=alpine:3: no such earlier stage"},
		{"copy no ctx", "FROM a\nCOPY x /x\n", "line 2: COPY from the build context, but the build has no context"},
		{"multi src", "FROM a\nCOPY a b /dest\n", "line 2: COPY with more than one source"},
		{"run mount", "FROM a\nRUN --mount=type=cache,target=/c make\n", "line 2: RUN --mount is not supported"},
		{"run host network", "FROM a\nRUN --network=host make\n", "line 2"},
		{"heredoc", "FROM a\nRUN <<EOF\necho hi\nEOF\n", "line 2: RUN with a here-document"},
		{"platform", "FROM --platform=linux/arm64 a\n", "line 1: FROM --platform"},
		{"roost empty", "FROM roost:\n", "line 1: FROM roost: without a template name"},
		{"escape", "FROM a\nCOPY ../x /x\n", "leaves the build context"},
		{"chmod", "FROM a\nCOPY --chmod=u+x a /a\n", `mode "u+x"`},
	} {
		_, err := ParseDockerfile([]byte(tc.src), nil, ctxIf(tc.name != "copy no ctx"))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func ctxIf(b bool) content.Digest {
	if b {
		return ctxBlob
	}
	return ""
}

func FuzzParseDockerfile(f *testing.F) {
	f.Add([]byte("FROM a AS b\nARG X=1\nRUN echo $X\nCOPY --from=b /x /y\nCMD [\"a\"]\n"))
	f.Add([]byte("FROM roost:base\nCOPY . /app\nWORKDIR app\nUSER user\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		spec, err := ParseDockerfile(src, nil, ctxBlob)
		if err == nil {
			if err := spec.Validate(); err != nil {
				t.Fatalf("ParseDockerfile gave a spec that does not validate: %v", err)
			}
		}
	})
}
