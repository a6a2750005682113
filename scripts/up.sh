#!/usr/bin/env bash
# Brings roost up on this machine: installs what it needs, builds, and runs
# `roost up`: the control plane (E2B-compatible API and proxy) on
# 127.0.0.1:3000 with a host agent (namespace sandboxes). The first sandbox
# of the base template builds it (about a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "up: run as root (sandboxes need namespaces, cgroups and mounts)" >&2; exit 1; }
bash scripts/deps.sh
export PATH=/usr/local/go/bin:$PATH
make build
exec bin/roost up "$@"
