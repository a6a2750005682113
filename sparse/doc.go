// Package sparse finds where a sparse file holds data: its extents in
// order, holes left out, so that disk images and memory snapshots are
// copied, merged and sent without the gigabytes of zeros their holes
// stand for. It reads, never writes; what to do with each extent is the
// caller's. A leaf: the standard library and the kernel's SEEK_DATA.
package sparse
