// Package server assembles envd: it builds the Connect services and HTTP
// endpoints, puts them behind the access check, and serves them on one port
// over HTTP/1.1 and h2c. It owns the lifetime of everything it starts.
//
// The endpoints themselves live in their own packages; server adds only the
// small ones: /health, /init, /envs, /metrics and /ports.
package server
