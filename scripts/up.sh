#!/usr/bin/env bash
# Brings roost up on this machine: installs what it needs, builds, and runs.
# Today the stack is envd on :49983 (see README); `roost up` replaces this
# once the control plane exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export PATH=/usr/local/go/bin:$PATH
make build
echo "envd: http://127.0.0.1:49983 (Ctrl-C stops it)"
exec bin/envd -addr "${ENVD_ADDR:-127.0.0.1:49983}" "$@"
