package image

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// progressEvery is how often a layer in progress is reported.
const progressEvery = time.Second

// maxLayerBytes bounds a layer uncompressed: a few kilobytes of gzip can
// expand to terabytes. Twice the default size budget of a template,
// which Materialize would refuse beyond anyway. A var for tests.
var maxLayerBytes int64 = 16 << 30

// importImage puts img's layers and a manifest of them into blobs.
// source describes the image for people ("image docker.io/x:1").
func importImage(ctx context.Context, img v1.Image, source string, blobs *content.Blobs, progress func(string)) (content.Manifest, content.Digest, error) {
	if progress == nil {
		progress = func(string) {}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("image config: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("image layers: %w", err)
	}
	m := content.Manifest{Schema: content.ManifestSchema, Layers: make([]content.Descriptor, 0, len(layers)), Config: configOf(cfg, source)}
	for i, l := range layers {
		desc, err := putLayer(ctx, l, blobs, fmt.Sprintf("%d/%d", i+1, len(layers)), progress)
		if err != nil {
			return content.Manifest{}, "", fmt.Errorf("layer %d of %d: %w", i+1, len(layers), err)
		}
		m.Layers = append(m.Layers, desc)
	}
	d, err := blobs.PutManifest(ctx, m)
	if err != nil {
		return content.Manifest{}, "", err
	}
	return m, d, nil
}

// putLayer puts layer l, uncompressed, into blobs under its diffID,
// unless blobs has it already.
func putLayer(ctx context.Context, l v1.Layer, blobs *content.Blobs, which string, progress func(string)) (content.Descriptor, error) {
	diffID, err := l.DiffID()
	if err != nil {
		return content.Descriptor{}, err
	}
	want, err := content.ParseDigest(diffID.String())
	if err != nil {
		return content.Descriptor{}, fmt.Errorf("layer diffID: %w", err)
	}
	if size, err := blobs.Stat(want); err == nil {
		progress(fmt.Sprintf("layer %s %s: present (%s)", which, short(want), mib(size)))
		return content.Descriptor{Digest: want, Size: size}, nil
	}
	rc, err := l.Uncompressed()
	if err != nil {
		return content.Descriptor{}, err
	}
	defer rc.Close()
	r := &countingReader{r: rc, limit: maxLayerBytes, every: progressEvery, last: time.Now(), report: func(n int64) {
		progress(fmt.Sprintf("pulling %s %s", short(want), mib(n)))
	}}
	progress(fmt.Sprintf("layer %s %s: pulling", which, short(want)))
	desc, err := blobs.Put(ctx, r, want)
	if err != nil {
		return content.Descriptor{}, err
	}
	progress(fmt.Sprintf("layer %s %s: %s", which, short(want), mib(desc.Size)))
	return desc, nil
}

// configOf is the template config of an image's config.
func configOf(cf *v1.ConfigFile, source string) content.Config {
	c := content.Config{Source: source}
	if cf == nil {
		return c
	}
	ic := cf.Config
	c.User, c.Workdir = ic.User, ic.WorkingDir
	for _, kv := range ic.Env {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			continue
		}
		if c.Env == nil {
			c.Env = map[string]string{}
		}
		c.Env[k] = v
	}
	c.StartCmd = startCmd(ic.Entrypoint, ic.Cmd)
	return c
}

// startCmd joins an image's entrypoint and command into a shell command
// line. A lone shell as the command (CMD ["bash"] of distribution
// images) is an interactive default, not a service: no start command.
func startCmd(entrypoint, cmd []string) string {
	if len(entrypoint) == 0 && len(cmd) == 1 {
		switch cmd[0] {
		case "sh", "bash", "/bin/sh", "/bin/bash", "/usr/bin/bash", "ash", "/bin/ash":
			return ""
		}
	}
	return shellJoin(append(append([]string{}, entrypoint...), cmd...))
}

// shellJoin quotes argv for a POSIX shell.
func shellJoin(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		out[i] = shellQuote(a)
	}
	return strings.Join(out, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// short is a digest cut for messages: "sha256:ab12cd34ef56…".
func short(d content.Digest) string { return d.Short() + "…" }

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// countingReader reports the bytes read so far, at most every every,
// and fails past limit.
type countingReader struct {
	r      io.Reader
	n      int64
	limit  int64
	every  time.Duration
	last   time.Time
	report func(n int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return n, fmt.Errorf("layer expands to more than %d bytes: %w", c.limit, errdefs.ErrInvalid)
	}
	if now := time.Now(); now.Sub(c.last) >= c.every {
		c.last = now
		c.report(c.n)
	}
	return n, err
}

// invalid marks err, caused by a bad reference or image, as
// errdefs.ErrInvalid.
func invalid(err error) error { return fmt.Errorf("%w: %w", err, errdefs.ErrInvalid) }
