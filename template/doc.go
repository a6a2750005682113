// Package template keeps the root filesystem trees that sandboxes start
// from, with their defaults (user, workdir, environment), in a directory on
// the host (<data>/templates):
//
//	<dir>/<name>/rootfs          the tree, files with their real ownership
//	<dir>/<name>/template.json   the Template record
//	<dir>/<name>/build.log       debootstrap's log (built templates only)
//
// A template appears atomically: it is built or imported into
// <dir>/.build-<name> and renamed into place only when complete, so a
// reader never sees half a tree. Work on one name is serialised by a lock
// file (<dir>/.lock-<name>, flock), which also holds across processes, so an
// agent and the tests of several packages can share one store. A build dir
// left over from a crash is removed by the next build of that name.
//
// Templates come from three places:
//   - "base", Debian stable (bookworm) built by debootstrap on first use
//     (EnsureBase) from the Debian mirror the host's apt is configured with,
//     with a non-root user "user" (uid 1000, passwordless sudo);
//   - Import, which unpacks a rootfs tarball (such as `docker export`
//     output, plain or gzip) without ever following a symlink in the tree,
//     so no entry can write outside it;
//   - Materialize, which applies the OCI layers of a content manifest
//     (template/content) in order, whiteouts included, with the same
//     refusals and a size budget, into the tree "m-<digest prefix>"
//     (TreeName); Adopt takes such a tree built elsewhere on the same
//     filesystem, and LayerOfTree turns a host-built tree into one layer.
//     Trees of manifests are evicted least recently used (Evict); base
//     and hand imports never are.
//
// Runtimes treat RootFS as read-only: the namespace runtime uses it as an
// overlay lower layer (through an idmapped mount, which is why files keep
// host-side ownership as the tree wants it, uid 0 being root), VM runtimes
// turn it into a disk image.
//
// It does not put envd into a tree (runtimes inject it at start), write a
// sandbox's hostname, hosts or resolv.conf (runtimes do; the tree holds
// placeholders), build templates from a base plus commands, or know which
// sandboxes use a template: removing a template that running sandboxes use
// is the caller's mistake to avoid. It needs root to keep ownership and to
// run debootstrap; an unprivileged Import keeps everything but ownership.
package template
