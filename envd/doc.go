// Package envd is the root of the in-sandbox agent: envd runs inside every
// sandbox (and directly on a host for development) and serves processes,
// terminals and files over Connect RPC and plain HTTP on port 49983, wire-
// compatible with the envd the official E2B SDKs talk to.
//
// Nothing under envd/ may import host-side code (agent, runtimes, control
// plane); see deps_test.go. The subpackages are:
//
//   - identity: Unix users and path resolution against a user's home.
//   - defaults: the default user, workdir, env vars and access token set by /init.
//   - auth: access-token and signature checks, and the user a request runs as.
//   - process: the process.Process service (pipes and PTYs).
//   - filesystem: the filesystem.Filesystem service (stat, list, watch, ...).
//   - files: the /files upload and download endpoints.
//   - portforward: makes loopback-only servers reachable on external addresses.
//   - server: wires the above into one http.Handler, plus /health, /init,
//     /envs and /metrics.
package envd
