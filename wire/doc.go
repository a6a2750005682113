// Package wire names the facts that roost's processes agree on over the
// network: envd's port, the headers that carry tokens and routing, the
// proxy's path prefix. Each is defined here once; both sides of a
// connection use the same constant.
//
// It holds constants only and imports nothing, so envd, the in-sandbox
// inits and the Go client may use it as well as the host side.
package wire
