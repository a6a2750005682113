// Package files serves envd's /files endpoint: GET downloads one file
// (ranges, conditional requests and optional gzip), POST uploads one or more
// files as multipart/form-data or a raw application/octet-stream body,
// optionally gzip-compressed. It speaks the wire format the E2B SDKs expect,
// including JSON error bodies ({"code":N,"message":"..."}).
//
// Uploads stream to disk part by part and never hold a file in memory. A
// destination that does not exist yet is created (O_EXCL) and written in
// place, as E2B's envd does, so a directory watcher sees CREATE and WRITE
// for its name. An existing destination is replaced atomically instead: the
// data goes to a temporary file beside it (named with
// filesystem.TempFilePrefix, which watchers ignore) that is renamed over it
// only after the whole request has been read. A request that fails part-way
// (a malformed body, a corrupt gzip stream, a full disk) thus leaves every
// existing destination as it was and removes the files it created.
//
// X-Metadata-<key>: <value> request headers are stored on every file of the
// request as user.e2b.<key> extended attributes (filesystem.WriteMetadata),
// replacing the file's earlier metadata, and each response entry reports
// the metadata the file has on disk.
//
// It is not responsible for access tokens or signatures (auth.Guard.Wrap
// checks those before a request reaches the handler), nor for listing,
// moving or watching files (package filesystem).
package files
