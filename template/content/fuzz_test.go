package content

import (
	"errors"
	"testing"

	"roost.dev/roost/errdefs"
)

func FuzzDecodeManifest(f *testing.F) {
	good, _ := Manifest{Layers: []Descriptor{{FromBytes([]byte("a")), 1}}, Config: Config{Env: map[string]string{"A": "1"}}}.Encode()
	f.Add(good)
	f.Add([]byte(`{"schema":"roost.template.v1","layers":null}`))
	f.Add([]byte(`{"schema":"roost.template.v1","layers":[{"digest":"sha256:","size":-1}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		// What decodes re-encodes to a manifest that decodes the same.
		enc, d := m.Encode()
		if _, err := DecodeManifestDigest(enc, d); err != nil {
			t.Fatalf("re-encoded manifest: %v", err)
		}
	})
}

func FuzzParseDigest(f *testing.F) {
	f.Add(string(FromBytes(nil)))
	f.Add("sha256:../../etc/passwd")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		if len(d.Hex()) != 64 || string(d) != s {
			t.Fatalf("accepted %q", s)
		}
	})
}
