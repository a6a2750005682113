// Package identity resolves the Unix user a request runs as and the paths it
// names. It reads /etc/passwd and /etc/group through os/user (pure Go, so envd
// stays static) and never caches: a sandbox's users may change under it.
//
// It is not responsible for deciding which user a request asked for; that is
// auth's job.
package identity
