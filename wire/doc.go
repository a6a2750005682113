// Package wire names the facts that roost's processes agree on over the
// network: envd's port, the headers that carry tokens and routing, the
// proxy's path prefix. Each is defined here once; both sides of a
// connection use the same constant.
//
// It holds constants, and the one formula both sides compute (the
// signature of a signed /files URL, FileSignature); it imports only the
// standard library, so envd, the in-sandbox inits and the Go client may
// use it as well as the host side.
package wire
