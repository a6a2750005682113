package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"roost.dev/roost/client"
	"roost.dev/roost/errdefs"
)

// writeTar writes a tar of the named empty files, gzipped when zip.
func writeTar(t *testing.T, zip bool, names ...string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if zip {
		var z bytes.Buffer
		zw := gzip.NewWriter(&z)
		zw.Write(data)
		zw.Close()
		data = z.Bytes()
	}
	p := filepath.Join(t.TempDir(), "a.tar")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSourceKind(t *testing.T) {
	layout := t.TempDir()
	if err := os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	notText := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(notText, []byte("not a tar at all, just some words in a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, src, want string
		err             error
	}{
		{"docker save", writeTar(t, false, "blobs/sha256/abc", "manifest.json", "repositories"), sourceDocker, nil},
		{"docker save of Docker 25", writeTar(t, false, "blobs/sha256/abc", "index.json", "manifest.json", "oci-layout"), sourceDocker, nil},
		{"docker save, gzip, ./ names", writeTar(t, true, "./abc/layer.tar", "./manifest.json"), sourceDocker, nil},
		{"a tar of an OCI layout", writeTar(t, false, "blobs/sha256/abc", "index.json", "oci-layout"), sourceOCI, nil},
		{"rootfs", writeTar(t, false, "./.keep", "etc/passwd", "usr/bin/python3", "etc/manifest.json"), sourceRootfs, nil},
		{"rootfs, gzip", writeTar(t, true, "bin/sh"), sourceRootfs, nil},
		{"layout directory", layout, sourceOCI, nil},
		{"directory without oci-layout", t.TempDir(), "", errdefs.ErrInvalid},
		{"not a tar", notText, "", errdefs.ErrInvalid},
		{"image", "docker.io/library/python:3.12", sourceImage, nil},
		{"image on a registry with a port", "127.0.0.1:5000/app@sha256:" + string(bytes.Repeat([]byte("a"), 64)), sourceImage, nil},
		{"missing file", "./app.tar", "", errdefs.ErrNotFound},
		{"missing archive by its suffix", "app.tar.gz", "", errdefs.ErrNotFound},
		{"bad reference", "Not A Ref!", "", errdefs.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := sourceKind(tc.src)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("sourceKind = %q, %v; want %v", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("sourceKind = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestBuildArgValues(t *testing.T) {
	t.Setenv("ROOST_TEST_ARG", "from-env")
	got, err := buildArgValues([]string{"A=1", "B=", "C=x=y", "ROOST_TEST_ARG", "ROOST_TEST_UNSET_ARG"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "B": "", "C": "x=y", "ROOST_TEST_ARG": "from-env"}
	if len(got) != len(want) {
		t.Errorf("buildArgValues = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := buildArgValues([]string{"=x"}); err == nil {
		t.Error("an empty name was accepted")
	}
}

func TestFormatEntry(t *testing.T) {
	for _, tc := range []struct {
		e    client.BuildLogEntry
		want string
	}{
		{client.BuildLogEntry{Step: "3", Level: "info", Message: "RUN make"}, "step 3/7 RUN make"},
		{client.BuildLogEntry{Step: "base", Level: "info", Message: "FROM docker.io/library/debian"}, "base FROM docker.io/library/debian"},
		{client.BuildLogEntry{Step: "4", Level: "error", Message: "exit code 2"}, "ERROR step 4/7 exit code 2"},
		{client.BuildLogEntry{Level: "info", Message: "pulling"}, "pulling"},
	} {
		if got := formatEntry(tc.e, 7); got != tc.want {
			t.Errorf("formatEntry(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}

func TestTemplateMatches(t *testing.T) {
	tpl := client.TemplateInfo{TemplateID: "tpl123", Name: "app", Names: []string{"app"}, Tags: []string{"default", "v2"}}
	for ref, want := range map[string]bool{
		"app": true, "tpl123": true, "app:v2": true, "app:v3": false, "other": false, "base": false,
	} {
		if got := templateMatches(tpl, ref); got != want {
			t.Errorf("templateMatches(%q) = %v, want %v", ref, got, want)
		}
	}
}
