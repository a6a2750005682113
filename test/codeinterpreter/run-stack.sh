#!/usr/bin/env bash
# Runs E2B's @e2b/code-interpreter (package.json pins it), unmodified,
# against `bin/roost up`, as a user of E2B would: E2B_API_URL and
# E2B_SANDBOX_URL point at it, the first create of code-interpreter-v1
# builds the template (apt-get in a build sandbox: a few minutes), and
# cases.mjs runs through the proxy.
#
#   make build && bash test/codeinterpreter/run-stack.sh   # as root
#
# Env: ROOST_STACK_PORT (default 39320). Needs root; skips (exit 0, saying
# so) otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${ROOST_STACK_PORT:-39320}"
STACK_NAME=code-interpreter-stack
source "$here/../lib/stack.sh"

fail() { echo "test/codeinterpreter stack: $*" >&2; exit 1; }
stack_need_root "test/codeinterpreter stack: skipped: sandboxes need root" || exit 0
stack_built || fail "$STACK_ERROR"
[[ -x "$STACK_REPO/bin/roost-interpreter" ]] || fail "no bin/roost-interpreter: run make build first"
if stack_addr_taken "127.0.0.1:$port"; then fail "port $port is taken"; fi

(cd "$here" && { [[ -d node_modules/@e2b/code-interpreter ]] || npm ci --no-audit --no-fund --loglevel=error; })

# Template builds run apt-get in build sandboxes (test/lib/stack.sh).
stack_mirror_flags

rc=1
trap 'set +e; stack_end "$rc" 80' EXIT
stack_start "127.0.0.1:$port" "${STACK_MIRROR_FLAGS[@]}" || fail "$STACK_ERROR"

unset E2B_DEBUG E2B_DOMAIN
export E2B_API_URL="$STACK_API" E2B_SANDBOX_URL="$STACK_API" E2B_API_KEY="$STACK_KEY"
set +e
(cd "$here" && timeout 1200 node --test --test-concurrency=1 --test-force-exit --test-reporter=spec stack.test.mjs)
rc=$?
set -e
exit "$rc"
