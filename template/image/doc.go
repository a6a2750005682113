// Package image turns OCI and Docker images into template content: it
// pulls an image from a registry (anonymously or with credentials, plain
// HTTP for an insecure registry), or reads one from an OCI image layout
// directory or a `docker save` archive, with go-containerregistry; puts
// each layer, uncompressed, into a content.Blobs under its diffID (so a
// layer that is not what the image's config says fails verification);
// and writes a manifest of those layers with the image's config (Env,
// WorkingDir, User, Entrypoint and Cmd as the start command).
//
// Of an index (a multi-platform image) it takes linux on the host's
// architecture. It does not apply layers (template.Store.Materialize
// does, with its refusal of escapes) or keep registry credentials.
package image
