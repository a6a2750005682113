package main

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/build"
	"roost.dev/roost/template/buildcontext"
	"roost.dev/roost/template/content"
)

// What roost template import was given.
const (
	sourceImage  = "image"          // a registry reference
	sourceDocker = "docker-archive" // a docker save archive
	sourceOCI    = "oci-layout"     // an OCI image layout: a directory, or a tar of one
	sourceRootfs = "rootfs"         // a root filesystem tarball (docker export)
)

type importOptions struct {
	insecure      bool
	user          string
	passwordStdin bool
}

func newTemplateImportCmd(local *localTemplates) *cobra.Command {
	var o importOptions
	cmd := &cobra.Command{
		Use:   "import NAME[:TAG] IMAGE-REF|DIR|FILE|-",
		Short: "Import a template from an image: a registry, an OCI layout, a docker save archive, or a rootfs tarball",
		Long: `Import a template from an image:

  roost template import py docker.io/library/python:3.12-slim   a registry (pulled by the control plane's host)
  roost template import app ./app-oci                           an OCI image layout directory
  roost template import app app.tar                             a docker save archive (manifest.json at its root)
  docker export CONTAINER | roost template import app -         a root filesystem tarball

Images become templates on the control plane and are pulled by every host
that creates a sandbox of them. A root filesystem tarball (a tar, plain or
gzip, without manifest.json or oci-layout at its root) is imported into this
host's own templates (--data-dir, as root), as before: import it on each
host that needs it.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImport(cmd.Context(), cmd, local, args[0], args[1], o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.insecure, "insecure-registry", false, "reach the registry over plain HTTP (or TLS it cannot verify)")
	f.StringVar(&o.user, "registry-user", "", "registry user name")
	f.BoolVar(&o.passwordStdin, "registry-password-stdin", false, "read the registry password from stdin")
	return cmd
}

func runImport(ctx context.Context, cmd *cobra.Command, local *localTemplates, tplName, src string, o importOptions) error {
	out := cmd.OutOrStdout()
	shown := src
	if src == "-" {
		shown = "stdin"
		if o.passwordStdin {
			return fmt.Errorf("stdin cannot carry both the password and the archive: %w", errdefs.ErrInvalid)
		}
		spooled, err := spool(cmd.InOrStdin())
		if err != nil {
			return err
		}
		defer os.Remove(spooled)
		src = spooled
	}
	kind, err := sourceKind(src)
	if err != nil {
		return err
	}
	if kind == sourceRootfs {
		return importRootfs(ctx, out, local, tplName, src, shown)
	}
	c, err := apiClient()
	if err != nil {
		return err
	}
	if kind == sourceImage {
		from, err := imageFrom(cmd.InOrStdin(), src, o)
		if err != nil {
			return err
		}
		return runBuild(ctx, out, c, tplName, build.Spec{Stages: []build.Stage{{From: from}}}, nil)
	}
	packed, err := packArchive(ctx, src)
	if err != nil {
		return err
	}
	defer packed.Close()
	from := build.From{Archive: content.Digest("sha256:" + packed.SHA256), ArchiveFormat: kind}
	what := map[string]string{sourceDocker: "docker save archive", sourceOCI: "OCI image layout"}[kind]
	return runBuild(ctx, out, c, tplName, build.Spec{Stages: []build.Stage{{From: from}}}, []pendingUpload{{what: what, packed: packed}})
}

// sourceKind tells what src is: a directory is an OCI layout, a file an
// archive of the kind its root says, anything else an image reference.
func sourceKind(src string) (string, error) {
	st, err := os.Stat(src)
	switch {
	case err == nil && st.IsDir():
		if _, err := os.Stat(filepath.Join(src, "oci-layout")); err != nil {
			return "", fmt.Errorf("%s is a directory but not an OCI image layout (no oci-layout file): %w", src, errdefs.ErrInvalid)
		}
		return sourceOCI, nil
	case err == nil:
		return archiveKind(src)
	case !errors.Is(err, os.ErrNotExist):
		return "", err
	}
	if looksLikePath(src) {
		return "", fmt.Errorf("%s: no such file or directory: %w", src, errdefs.ErrNotFound)
	}
	if _, err := name.ParseReference(src); err != nil {
		return "", fmt.Errorf("%s is neither a file nor an image reference: %w", src, errdefs.ErrInvalid)
	}
	return sourceImage, nil
}

// looksLikePath says whether src, which does not exist, was meant as a
// file rather than an image reference ("app.tar" parses as one).
func looksLikePath(src string) bool {
	for _, p := range []string{"/", "./", "../", "~"} {
		if strings.HasPrefix(src, p) {
			return true
		}
	}
	for _, s := range []string{".tar", ".tar.gz", ".tgz"} {
		if strings.HasSuffix(src, s) {
			return true
		}
	}
	return false
}

// archiveKind reads the names at the root of a tar (plain or gzip): a
// docker save archive has manifest.json, an OCI layout's tar oci-layout;
// any other tar is a root filesystem.
func archiveKind(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = f
	br := bufio.NewReader(f)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return "", fmt.Errorf("%s: %w: %w", file, err, errdefs.ErrInvalid)
		}
		defer zr.Close()
		r = zr
	} else if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	kind := sourceRootfs
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if n == 0 {
				return "", fmt.Errorf("%s is not a tar archive: %w: %w", file, err, errdefs.ErrInvalid)
			}
			return "", fmt.Errorf("%s: %w: %w", file, err, errdefs.ErrInvalid)
		}
		switch path.Clean(strings.TrimPrefix(h.Name, "/")) {
		case "manifest.json":
			return sourceDocker, nil
		case "oci-layout":
			kind = sourceOCI // docker save of Docker 25 and later has both
		}
	}
	return kind, nil
}

// imageFrom is the From of an image reference, with the registry's
// credentials.
func imageFrom(stdin io.Reader, ref string, o importOptions) (build.From, error) {
	from := build.From{Image: ref, Insecure: o.insecure}
	if o.user == "" && !o.passwordStdin {
		return from, nil
	}
	if o.user == "" || !o.passwordStdin {
		return build.From{}, fmt.Errorf("--registry-user and --registry-password-stdin go together: %w", errdefs.ErrInvalid)
	}
	pw, err := io.ReadAll(io.LimitReader(stdin, 64<<10))
	if err != nil {
		return build.From{}, fmt.Errorf("read the registry password: %w", err)
	}
	from.Registry = &build.RegistryAuth{Username: o.user, Password: strings.TrimRight(string(pw), "\r\n")}
	return from, nil
}

// packArchive makes the blob of an archive: a layout directory packed
// as a tar, an archive file as it is.
func packArchive(ctx context.Context, src string) (*buildcontext.Packed, error) {
	if st, err := os.Stat(src); err == nil && st.IsDir() {
		return buildcontext.Pack(ctx, src, nil, "")
	}
	return buildcontext.Open(src)
}

// spool copies stdin to a temporary file, which the caller removes.
func spool(r io.Reader) (string, error) {
	f, err := os.CreateTemp("", "roost-import-*.tar")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("read stdin: %w", err)
	}
	return f.Name(), nil
}

// importRootfs imports a root filesystem tarball into this host's own
// templates.
func importRootfs(ctx context.Context, out io.Writer, local *localTemplates, tplName, file, shown string) error {
	if strings.Contains(tplName, ":") {
		return fmt.Errorf("a rootfs tarball is imported into this host's templates, which have no tags: name it without :TAG: %w", errdefs.ErrInvalid)
	}
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(out, "%s is a root filesystem tarball: importing it into this host's templates (%s)\n", shown, local.store().Dir())
	t, err := local.store().Import(ctx, tplName, f)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "imported %s (%s, default user %q); other hosts need their own import\n", t.Name, humanBytes(t.SizeBytes), t.DefaultUser)
	return nil
}
