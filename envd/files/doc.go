// Package files serves envd's /files endpoint: GET downloads one file
// (ranges, conditional requests and optional gzip), POST uploads one or more
// files as multipart/form-data or a raw application/octet-stream body,
// optionally gzip-compressed. It speaks the wire format the E2B SDKs expect,
// including JSON error bodies ({"code":N,"message":"..."}).
//
// Uploads stream to disk part by part and never hold a file in memory. Each
// file is written to a temporary file beside its destination and renamed
// into place only after the whole request has been read, so a request that
// fails part-way (a malformed body, a corrupt gzip stream, a full disk)
// leaves every destination as it was.
//
// It is not responsible for access tokens or signatures (auth.Guard.Wrap
// checks those before a request reaches the handler), nor for listing,
// moving or watching files (package filesystem).
package files
