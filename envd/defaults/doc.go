// Package defaults holds what /init tells envd about the sandbox it serves:
// the default user and working directory, the environment every process
// inherits, and the access token. All methods are safe for concurrent use.
//
// It does not check tokens or parse requests; auth and server do.
package defaults
