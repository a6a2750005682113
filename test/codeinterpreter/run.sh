#!/usr/bin/env bash
# Runs E2B's @e2b/code-interpreter (package.json pins it), unmodified,
# against roost-interpreter: the server is built and started on
# 127.0.0.1:49999, where the package's debug mode sends its requests.
# Needs Node.js and Debian's python3-ipykernel, python3-matplotlib and
# python3-pandas (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --silent
bin=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$bin"' EXIT
go build -o "$bin/roost-interpreter" ../../cmd/roost-interpreter
"$bin/roost-interpreter" -addr 127.0.0.1:49999 -cwd "$bin" &
pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:49999/health >/dev/null && break; sleep 0.1; done
E2B_DEBUG=true E2B_API_KEY=unused node --test --test-concurrency=1 --test-force-exit interpreter.test.mjs
