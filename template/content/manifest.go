package content

import (
	"encoding/json"
	"fmt"

	"roost.dev/roost/errdefs"
)

// ManifestSchema is the schema every manifest names.
const ManifestSchema = "roost.template.v1"

// Config is a template's defaults.
type Config struct {
	User     string            `json:"user,omitempty"`
	Workdir  string            `json:"workdir,omitempty"`
	Env      map[string]string `json:"env,omitempty"`
	StartCmd string            `json:"startCmd,omitempty"`
	ReadyCmd string            `json:"readyCmd,omitempty"`
	// Source says, for people, where the template came from: "image
	// docker.io/x:1", "dockerfile", "e2b", "template base".
	Source string `json:"source,omitempty"`
}

// Manifest is one build of a template: its layers, bottom first, and its
// config. Its digest names that build everywhere.
type Manifest struct {
	Schema string       `json:"schema"`
	Layers []Descriptor `json:"layers"`
	Config Config       `json:"config"`
}

// Encode returns m's canonical encoding (encoding/json of the struct:
// fixed field order, map keys sorted) and its digest. An empty Schema is
// written as ManifestSchema.
func (m Manifest) Encode() ([]byte, Digest) {
	if m.Schema == "" {
		m.Schema = ManifestSchema
	}
	if m.Layers == nil {
		m.Layers = []Descriptor{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("encode manifest: %v", err)) // strings, ints and a string map always encode
	}
	return b, FromBytes(b)
}

// maxManifestSize bounds a manifest read from disk or the network.
const maxManifestSize = 4 << 20

// DecodeManifest parses a manifest and checks its schema and every
// layer's digest and size; errors wrap errdefs.ErrInvalid.
func DecodeManifest(b []byte) (Manifest, error) {
	if len(b) > maxManifestSize {
		return Manifest{}, fmt.Errorf("manifest of %d bytes, more than %d: %w", len(b), maxManifestSize, errdefs.ErrInvalid)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Manifest{}, fmt.Errorf("decode manifest: %w: %w", err, errdefs.ErrInvalid)
	}
	if m.Schema != ManifestSchema {
		return Manifest{}, fmt.Errorf("manifest schema %q, want %q: %w", m.Schema, ManifestSchema, errdefs.ErrInvalid)
	}
	for i, l := range m.Layers {
		if _, err := ParseDigest(string(l.Digest)); err != nil {
			return Manifest{}, fmt.Errorf("manifest layer %d: %w", i+1, err)
		}
		if l.Size < 0 {
			return Manifest{}, fmt.Errorf("manifest layer %d: size %d: %w", i+1, l.Size, errdefs.ErrInvalid)
		}
	}
	for k := range m.Config.Env {
		if k == "" {
			return Manifest{}, fmt.Errorf("manifest env: empty name: %w", errdefs.ErrInvalid)
		}
	}
	return m, nil
}

// DecodeManifestDigest is DecodeManifest of bytes that must have digest
// want.
func DecodeManifestDigest(b []byte, want Digest) (Manifest, error) {
	if got := FromBytes(b); got != want {
		return Manifest{}, fmt.Errorf("manifest has digest %s, want %s: %w", got, want, errdefs.ErrInvalid)
	}
	return DecodeManifest(b)
}
