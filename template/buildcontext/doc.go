// Package buildcontext packs a directory the way a build reads it: a
// Dockerfile's build context (minus what its .dockerignore excludes), or
// an OCI image layout directory, as one tar whose digest names it.
//
// The tar is reproducible: entries in lexical order, owned by root
// (uid and gid 0, no names), with a fixed modification time, so an
// unchanged directory packs to the same digest and a rebuild of it hits
// the build cache. It keeps regular files, directories and symlinks (as
// links, never followed); sockets, pipes and devices are left out, and a
// hard-linked file is stored once per name.
//
// It does not upload the tar or interpret a Dockerfile (template/build
// does), and it reads only below the directory it is given.
package buildcontext
