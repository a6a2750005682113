// Package content keeps the blobs templates are made of, each named by the
// sha256 digest of its bytes: layers (uncompressed tars), manifests (a
// template's layers and config, schema roost.template.v1) and uploaded
// files.
//
// A Blobs is a directory shared by goroutines and processes:
//
//	<dir>/sha256/<hex>    a verified blob, appeared atomically (rename)
//	<dir>/partial/<hex>   a download in progress, resumed where it stopped
//	<dir>/tmp/            blobs being written by Put
//
// A blob is never visible before its digest is verified. Each Open marks
// the blob used (its mtime), and Evict removes the least recently used
// blobs over a byte budget.
//
// Fetch copies a blob from a Source (HTTPSource: another host's blob
// route, with Range to resume); ServeBlob and ReceiveBlob are the HTTP
// handlers of that route's two ends.
//
// It does not know what a blob holds beyond a manifest's schema: applying
// layers to a tree is package template's, pulling images template/image's.
package content
