// Package check holds the offline checks of deploy/: the Kubernetes
// manifests decode strictly into Kubernetes' own API types (an unknown
// or misspelt field fails) and hang together (selectors, ports, volumes,
// secrets), and the systemd units pass systemd-analyze verify.
package check
