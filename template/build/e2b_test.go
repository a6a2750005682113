package build

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// The testdata/e2b-sdk-*.json bodies are the official E2B JS SDK's
// (2.45.0) Template.toJSON of the builders in their test below.

var appFiles = content.FromBytes([]byte("app"))

func uploaded(hashes map[string]content.Digest) func(string) (content.Digest, error) {
	return func(h string) (content.Digest, error) {
		if d, ok := hashes[h]; ok {
			return d, nil
		}
		return "", fmt.Errorf("files %s: %w", h, errdefs.ErrNotFound)
	}
}

// TestFromE2BSDK reads what the SDK sends for
//
//	Template({fileContextPath}).fromTemplate('base').aptInstall(['curl'])
//	  .copy('app/', '/home/user/app', {user: 'user', mode: 0o755})
//	  .setEnvs({GREETING: 'hi', EMPTY: ''}).setWorkdir('/home/user/app')
//	  .npmInstall('left-pad', {g: true}).pipInstall('requests')
//	  .runCmd(['echo one', 'echo two']).setUser('root')
//	  .skipCache().runCmd('echo forced', {user: 'user'})
//	  .setStartCmd('python3 -m http.server 8000', 'curl -fs localhost:8000')
func TestFromE2BSDK(t *testing.T) {
	body, err := os.ReadFile("testdata/e2b-sdk-base.json")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := FromE2B(body, uploaded(map[string]content.Digest{"9ec2c90429a0f516c07539fd1be563bea5721dbec54f825f8a165ee8267891c9": appFiles}))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		Stages: []Stage{{From: From{Template: "base"}, Steps: []Step{
			{Type: StepRun, Args: []string{"apt-get update && DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y curl", "root"}},
			{Type: StepCopy, Args: []string{"app/", "/home/user/app", "user", "0755"}, Files: appFiles},
			{Type: StepEnv, Args: []string{"GREETING", "hi", "EMPTY", ""}},
			{Type: StepWorkdir, Args: []string{"/home/user/app"}},
			{Type: StepRun, Args: []string{"npm install -g left-pad", "root"}},
			{Type: StepRun, Args: []string{"pip install requests", "root"}},
			{Type: StepRun, Args: []string{"echo one && echo two"}},
			{Type: StepUser, Args: []string{"root"}},
			{Type: StepRun, Args: []string{"echo forced", "user"}, Force: true},
		}}},
		StartCmd: "python3 -m http.server 8000",
		ReadyCmd: "curl -fs localhost:8000",
		Source:   "e2b",
	}
	if !reflect.DeepEqual(spec, want) {
		t.Errorf("spec:\n got %+v\nwant %+v", spec, want)
	}
}

func TestFromE2BFrom(t *testing.T) {
	for _, tc := range []struct {
		file string
		want From
	}{
		{"testdata/e2b-sdk-registry.json", From{Image: "registry.example.com/x:1", Registry: &RegistryAuth{Username: "u", Password: "p"}}},
		{"testdata/e2b-sdk-e2bbase.json", From{Template: "base"}},
	} {
		body, err := os.ReadFile(tc.file)
		if err != nil {
			t.Fatal(err)
		}
		spec, err := FromE2B(body, uploaded(nil))
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if got := spec.Stages[0].From; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: from %+v, want %+v", tc.file, got, tc.want)
		}
	}
}

func TestFromE2BRejects(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
		cat              error
	}{
		{"not json", `{`, "template build body", errdefs.ErrInvalid},
		{"no from", `{"steps":[]}`, "want fromImage or fromTemplate", errdefs.ErrInvalid},
		{"both", `{"fromImage":"a","fromTemplate":"b"}`, "both", errdefs.ErrInvalid},
		{"aws", `{"fromImage":"x.dkr.ecr.amazonaws.com/a","fromImageRegistry":{"type":"aws","awsAccessKeyId":"k"}}`, `type "aws" is not supported by roost`, errdefs.ErrInvalid},
		{"gcp", `{"fromImage":"gcr.io/a/b","fromImageRegistry":{"type":"gcp","serviceAccountJson":"{}"}}`, `type "gcp" is not supported by roost`, errdefs.ErrInvalid},
		{"unknown step", `{"fromTemplate":"base","steps":[{"type":"EXPOSE","args":["80"]}]}`, `unknown step type "EXPOSE"`, errdefs.ErrInvalid},
		{"copy without hash", `{"fromTemplate":"base","steps":[{"type":"COPY","args":["a","/b"]}]}`, "COPY without filesHash", errdefs.ErrInvalid},
		{"copy not uploaded", `{"fromTemplate":"base","steps":[{"type":"COPY","args":["a","/b"],"filesHash":"ff"}]}`, "files ff", errdefs.ErrNotFound},
		{"copy escapes", `{"fromTemplate":"base","steps":[{"type":"COPY","args":["../x","/b"],"filesHash":"aa"}]}`, "leaves the build context", errdefs.ErrInvalid},
		{"bad mode", `{"fromTemplate":"base","steps":[{"type":"COPY","args":["a","/b","","rwx"],"filesHash":"aa"}]}`, `mode "rwx"`, errdefs.ErrInvalid},
		{"env odd", `{"fromTemplate":"base","steps":[{"type":"ENV","args":["A"]}]}`, "key, value pairs", errdefs.ErrInvalid},
		{"run empty", `{"fromTemplate":"base","steps":[{"type":"run","args":[" "]}]}`, "empty command", errdefs.ErrInvalid},
	} {
		_, err := FromE2B([]byte(tc.body), uploaded(map[string]content.Digest{"aa": appFiles}))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, tc.cat) {
			t.Errorf("%s: err %v, want %q (%v)", tc.name, err, tc.want, tc.cat)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := From{Template: "base"}
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"no stages", Spec{}, "no stages"},
		{"two froms", Spec{Stages: []Stage{{From: From{Template: "a", Image: "b"}}}}, "exactly one"},
		{"forward stage", Spec{Stages: []Stage{{From: From{Stage: "later"}}, {Name: "later", From: ok}}}, `no earlier stage "later"`},
		{"same name", Spec{Stages: []Stage{{Name: "a", From: ok}, {Name: "a", From: ok}}}, "used twice"},
		{"archive format", Spec{Stages: []Stage{{From: From{Archive: appFiles, ArchiveFormat: "zip"}}}}, `format "zip"`},
		{"bad digest", Spec{Stages: []Stage{{From: From{Template: "a", Manifest: "sha256:x"}}}}, "from manifest"},
		{"copy both", Spec{Stages: []Stage{{Name: "a", From: ok}, {From: ok, Steps: []Step{{Type: StepCopy, Args: []string{"a", "b"}, Files: appFiles, FromStage: "a"}}}}}, "exactly one of files or fromStage"},
		{"exec on copy", Spec{Stages: []Stage{{From: ok, Steps: []Step{{Type: StepCopy, Args: []string{"a", "b"}, Files: appFiles, Exec: []string{"x"}}}}}}, "only go with RUN"},
		{"no type", Spec{Stages: []Stage{{From: ok, Steps: []Step{{Args: []string{"a"}}}}}}, "without a type"},
		{"workdir args", Spec{Stages: []Stage{{From: ok, Steps: []Step{{Type: StepWorkdir, Args: []string{"a", "b"}, Line: 4}}}}}, "step 1 (line 4): WORKDIR: want one argument"},
	} {
		err := tc.spec.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestContextPath(t *testing.T) {
	for src, want := range map[string]string{"a": "a", "./a/": "a", "/a/b": "a/b", ".": "", "a/../b": "b", "..myconfig": "..myconfig"} {
		if got, err := contextPath(src); err != nil || got != want {
			t.Errorf("contextPath(%q) = %q, %v; want %q", src, got, err, want)
		}
	}
	for _, src := range []string{"", "..", "../a", "a/../../b", "/../a"} {
		if got, err := contextPath(src); err == nil {
			t.Errorf("contextPath(%q) = %q, want an error", src, got)
		}
	}
}

func FuzzFromE2B(f *testing.F) {
	for _, name := range []string{"testdata/e2b-sdk-base.json", "testdata/e2b-sdk-registry.json"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		spec, err := FromE2B(body, func(string) (content.Digest, error) { return appFiles, nil })
		if err == nil {
			if err := spec.Validate(); err != nil {
				t.Fatalf("FromE2B gave a spec that does not validate: %v", err)
			}
		}
	})
}
