package image

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"roost.dev/roost/errdefs"
	"roost.dev/roost/template/content"
)

// Registry is how to reach a registry.
type Registry struct {
	// Username and Password, when set, are sent as basic credentials
	// (exchanged for a token where the registry asks); else anonymous.
	Username, Password string
	// Insecure allows plain HTTP and self-signed TLS.
	Insecure bool
}

// Platform is the platform taken from an index: linux on the host's
// architecture.
func Platform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }

// Pull fetches image ref (linux on the host's architecture, from an
// index) and puts its layers (uncompressed, named by diffID; those
// present are not fetched) and a manifest into blobs. progress (may be
// nil) gets a message per layer and about every second while one is
// pulled. A bad ref wraps errdefs.ErrInvalid, an unknown image or tag
// errdefs.ErrNotFound, a registry that refuses (401, 403)
// errdefs.ErrPermissionDenied, a registry not reached
// errdefs.ErrUnreachable.
func Pull(ctx context.Context, ref string, reg Registry, blobs *content.Blobs, progress func(msg string)) (content.Manifest, content.Digest, error) {
	var opts []name.Option
	if reg.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return content.Manifest{}, "", fmt.Errorf("image reference %q: %w", ref, invalid(err))
	}
	var auth authn.Authenticator = authn.Anonymous
	if reg.Username != "" || reg.Password != "" {
		auth = &authn.Basic{Username: reg.Username, Password: reg.Password}
	}
	ropts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth), remote.WithPlatform(Platform())}
	if reg.Insecure {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for: --insecure-registry
		ropts = append(ropts, remote.WithTransport(t))
	}
	if progress != nil {
		progress("resolving " + r.Name())
	}
	img, err := remote.Image(r, ropts...)
	if err != nil {
		return content.Manifest{}, "", pullErr(ctx, r, reg, err)
	}
	m, d, err := importImage(ctx, img, "image "+r.Name(), blobs, progress)
	if err != nil {
		return content.Manifest{}, "", pullErr(ctx, r, reg, err)
	}
	return m, d, nil
}

// pullErr gives err, from pulling r, its category and a message that
// says what to do.
func pullErr(ctx context.Context, r name.Reference, reg Registry, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("pull %s: %w", r.Name(), context.Cause(ctx))
	}
	if errors.Is(err, errdefs.ErrInvalid) || errors.Is(err, errdefs.ErrNotFound) {
		return fmt.Errorf("pull %s: %w", r.Name(), err)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
			hint := "pass credentials"
			if reg.Username != "" {
				hint = "check the credentials"
			}
			return fmt.Errorf("pull %s: registry answered %d (the image needs credentials, or does not exist): %s: %w: %w",
				r.Name(), terr.StatusCode, hint, err, errdefs.ErrPermissionDenied)
		case terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode):
			return fmt.Errorf("pull %s: no such image or tag: %w: %w", r.Name(), err, errdefs.ErrNotFound)
		case terr.StatusCode == http.StatusTooManyRequests || terr.StatusCode >= 500:
			return fmt.Errorf("pull %s: %w: %w", r.Name(), err, errdefs.ErrUnavailable)
		}
		return fmt.Errorf("pull %s: %w", r.Name(), err)
	}
	var nerr net.Error
	if errors.As(err, &nerr) {
		return fmt.Errorf("pull %s: registry %s not reached: %w: %w", r.Name(), r.Context().RegistryStr(), err, errdefs.ErrUnreachable)
	}
	return fmt.Errorf("pull %s: %w", r.Name(), err)
}

func hasCode(terr *transport.Error, codes ...transport.ErrorCode) bool {
	for _, e := range terr.Errors {
		for _, c := range codes {
			if e.Code == c {
				return true
			}
		}
	}
	return false
}
