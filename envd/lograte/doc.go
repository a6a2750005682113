// Package lograte bounds how many log lines envd writes, whatever the
// sandbox does: envd logs events the sandbox causes (a server starting or
// stopping to listen, a process that cannot start), and a sandbox that
// causes them in a loop must not fill its console with them.
//
// Handler wraps a slog.Handler with a token bucket of lines: records
// within the rate pass, the rest are counted and dropped, and the next
// record that passes is preceded by one saying how many were dropped.
// Errors always count against the same bucket: a flood of errors is a
// flood too.
//
// It does not bound bytes (the agent's console drain does) or choose what
// envd logs.
package lograte
