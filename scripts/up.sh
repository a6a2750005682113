#!/usr/bin/env bash
# Brings roost up on this machine: installs what it needs, builds, and runs
# the host agent (sandboxes with the namespace runtime) on 127.0.0.1:7070.
# The first sandbox of the base template builds it (about a minute).
# `roost up`, with the control plane, replaces this once it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "up: run as root (sandboxes need namespaces, cgroups and mounts)" >&2; exit 1; }
bash scripts/deps.sh
export PATH=/usr/local/go/bin:$PATH
make build
echo "roost agent: http://127.0.0.1:7070 (Ctrl-C stops the agent; sandboxes keep running)"
exec bin/roost agent "$@"
