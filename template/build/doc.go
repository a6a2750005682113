// Package build makes templates: it turns the ways a template is described
// (E2B's template builder, a Dockerfile, an image import) into one Spec,
// and builds a Spec into a manifest of content-addressed layers.
//
// A Spec is stages; each starts from a template, an image, an image
// archive or an earlier stage, and applies steps: RUN, COPY, ADD, ENV,
// WORKDIR, USER. RUN runs in a build sandbox the host provides (Env); the
// step's layer is what the sandbox wrote over the tree, with overlay
// whiteouts turned into OCI ones and IDs unshifted. COPY and ADD read a
// files blob (a tar, plain or gzip) or an earlier stage's tree and write
// their layer themselves; ENV and USER only change the config; WORKDIR
// writes a layer when its directory is missing.
//
// Every step has a cache key: the hash of the key before it (the base's
// manifest digest for the first), the step as JSON (without Force and
// Line) and its inputs' digests (files, the source stage's final key). A
// key's record (Builder.Dir/cache/<key>.json) holds the step's layer and
// the config after it; a rebuild with nothing changed finds every record
// and unpacks no tree at all. A Force step, and every step after it, runs
// again.
//
// Dockerfiles are parsed by BuildKit's parser. Choices made there:
//   - FROM roost:NAME (or roost:NAME:TAG) is a roost template, FROM of an
//     earlier stage's name (or index) is that stage, anything else is an
//     image reference; FROM scratch and --platform are refused.
//   - RUN's shell form runs under SHELL (default /bin/sh -c), its exec form
//     as given; the stage's ARGs are its environment, not the template's.
//     Until the stage's first USER, RUN runs as root (as over the images
//     Dockerfiles are written for), whatever user the base template has;
//     the template keeps the base's user unless USER changes it.
//   - COPY and ADD copy as root unless --chown says otherwise; --from names
//     an earlier stage (an image is refused); --link is accepted (it only
//     changes BuildKit's caching); --parents and --exclude are refused.
//   - ADD unpacks a tar archive (plain or gzip) of the context into its
//     destination and copies other files as COPY does; a URL or git source
//     is refused: download in a RUN step.
//   - The last stage's ENTRYPOINT and CMD become the start command (exec
//     form joined shell-quoted); without them the base's start command
//     stays.
//   - RUN's build sandbox has internet; RUN --network=none runs one
//     without (--network=host is refused: a build never gets the host's
//     network).
//   - LABEL, EXPOSE and MAINTAINER are accepted and ignored; VOLUME,
//     HEALTHCHECK, ONBUILD, STOPSIGNAL, RUN --mount and here-documents
//     are refused with their line.
//
// E2B's TemplateBuildStartV2 (FromE2B) becomes one stage. Its RUN runs in
// /bin/bash -c (/bin/sh -c when the tree has no bash), as the step's user
// or the current one; COPY's owner defaults to the current user. The
// fromImage "e2bdev/base" is roost's base template; aws and gcp
// registries are refused.
//
// Steps run as the config's user (root when the base names none) in its
// workdir ("/" when none), with its environment and a default PATH.
//
// It does not pull images, fetch blobs or run sandboxes (the host's Env
// does), keep build records or names (the control plane does), or start
// templates' start commands.
package build
