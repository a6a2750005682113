package microvm

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/runtime"
)

// TestCheckVolumes: a VM's volume paths are checked against the
// template's tree before the VM boots: a symbolic link or a file on the
// way is refused, as the namespace runtime refuses it.
func TestCheckVolumes(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/bin", filepath.Join(root, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	vol := func(path string) runtime.VolumeMount {
		return runtime.VolumeMount{ID: "v", Image: "/v.img", Path: path}
	}
	for _, tc := range []struct {
		vols []runtime.VolumeMount
		ok   bool
	}{
		{[]runtime.VolumeMount{vol("/mnt/data")}, true},
		{[]runtime.VolumeMount{vol("/usr/bin/vol")}, true},
		{[]runtime.VolumeMount{vol("/bin/vol")}, false},
		{[]runtime.VolumeMount{vol("/bin")}, false},
		{[]runtime.VolumeMount{vol("/file/x")}, false},
		{[]runtime.VolumeMount{vol("/proc/x")}, false},
		{[]runtime.VolumeMount{{ID: "v", Path: "/data"}}, false}, // no image
		{make([]runtime.VolumeMount, MaxVolumes+1), false},
	} {
		err := CheckVolumes(runtime.Spec{RootFS: root, Volumes: tc.vols})
		if tc.ok != (err == nil) || err != nil && !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("volumes %+v: %v", tc.vols, err)
		}
	}
}

// TestVolumesParam: the roost.volumes word names each volume's serial,
// path and mode, as package guest reads it.
func TestVolumesParam(t *testing.T) {
	spec := runtime.Spec{Volumes: []runtime.VolumeMount{{ID: "a", Path: "/a b"}, {ID: "b", Path: "/ro", ReadOnly: true}}}
	word, ok := strings.CutPrefix(volumesParam(spec), "roost.volumes=")
	if !ok {
		t.Fatalf("word %q", volumesParam(spec))
	}
	b, err := base64.RawURLEncoding.DecodeString(word)
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0]["serial"] != "roostvol0" || got[0]["path"] != "/a b" || got[0]["ro"] != nil ||
		got[1]["serial"] != "roostvol1" || got[1]["ro"] != true {
		t.Fatalf("roost.volumes = %s", b)
	}
	if volumesParam(runtime.Spec{}) != "" {
		t.Error("a word for no volumes")
	}
}
