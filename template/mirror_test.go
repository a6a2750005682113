package template

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"roost.dev/roost/errdefs"
)

func TestFindMirror(t *testing.T) {
	const deb822 = `Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
`
	cases := []struct {
		name    string
		files   map[string]string
		want    Mirror
		wantErr bool
	}{{
		name:  "deb822",
		files: map[string]string{"sources.list.d/debian.sources": deb822},
		want:  Mirror{URL: "http://mirror.example/debian", Keyring: "/usr/share/keyrings/debian-archive-keyring.gpg", From: "sources.list.d/debian.sources"},
	}, {
		name:  "one-line with options",
		files: map[string]string{"sources.list": "# comment\ndeb-src http://src.example/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian/ bookworm main contrib # trailing\n"},
		want:  Mirror{URL: "https://mirror.example/debian", Keyring: "/k.gpg", From: "sources.list"},
	}, {
		name: "bookworm preferred over other releases and pockets",
		files: map[string]string{
			"sources.list":                 "deb http://updates.example/debian bookworm-updates main\ndeb http://trixie.example/debian trixie main\n",
			"sources.list.d/zz.list":       "deb http://bookworm.example/debian bookworm main\n",
			"sources.list.d/other.sources": "Types: deb\nURIs: http://late.example/debian\nSuites: bookworm\nComponents: main\n",
		},
		want: Mirror{URL: "http://bookworm.example/debian", From: "sources.list.d/zz.list"},
	}, {
		name:  "another Debian release serves bookworm too",
		files: map[string]string{"sources.list": "deb http://trixie.example/debian trixie main\n"},
		want:  Mirror{URL: "http://trixie.example/debian", From: "sources.list"},
	}, {
		name: "disabled stanza and inline key skipped",
		files: map[string]string{"sources.list.d/a.sources": "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n" +
			"Types: deb\nURIs: http://on.example/debian\nSuites: stable\nComponents: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n"},
		want: Mirror{URL: "http://on.example/debian", From: "sources.list.d/a.sources"},
	}, {
		name:    "security only",
		files:   map[string]string{"sources.list": "deb http://security.example/debian-security bookworm-security main\n"},
		wantErr: true,
	}, {
		name:    "not Debian",
		files:   map[string]string{"sources.list": "deb http://archive.example/ubuntu jammy main universe\n"},
		wantErr: true,
	}, {
		name:    "no main component",
		files:   map[string]string{"sources.list": "deb http://mirror.example/debian bookworm contrib\n"},
		wantErr: true,
	}, {
		name:    "cdrom only",
		files:   map[string]string{"sources.list": "deb cdrom:[Debian]/ bookworm main\n"},
		wantErr: true,
	}, {
		name:    "disabled file extension",
		files:   map[string]string{"sources.list.d/debian.sources.disabled": deb822},
		wantErr: true,
	}, {
		name:    "nothing",
		files:   map[string]string{},
		wantErr: true,
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range c.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := findMirror(dir)
			if c.wantErr {
				if !errors.Is(err, errdefs.ErrUnavailable) {
					t.Errorf("findMirror = %+v, %v; want ErrUnavailable", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.want.From = filepath.Join(dir, c.want.From)
			if got != c.want {
				t.Errorf("findMirror = %+v, want %+v", got, c.want)
			}
		})
	}
}
