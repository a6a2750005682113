// Package client is a Go client for roost: the control plane's
// E2B-compatible REST API (create, list, get, kill, pause, resume, timeout)
// and, through the control plane's proxy, a sandbox's envd (commands,
// terminals, files, listening ports). The roost CLI is built on it.
//
// It speaks only the public wire contracts (HTTP JSON, Connect); it imports
// no server-side package.
package client
