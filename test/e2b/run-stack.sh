#!/usr/bin/env bash
# Runs the E2B JS SDK against the whole stack: `bin/roost up` (control plane,
# proxy and a host agent with the namespace runtime), as a user of E2B would
# point the SDK at roost:
#
#   make build && bash test/e2b/run-stack.sh        # as root
#
# roost up runs on a data directory of its own that shares the base template
# with the Go tests ($ROOST_TEST_CACHE, default /var/tmp/roost-test-cache),
# and is taken down with its sandboxes at the end (test/lib/stack.sh).
# Env: ROOST_STACK_PORT (default 39300). Needs root; skips (exit 0, saying
# so) otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${ROOST_STACK_PORT:-39300}"
STACK_NAME=e2b-stack
source "$here/../lib/stack.sh"

fail() { echo "test/e2b stack: $*" >&2; exit 1; }
stack_need_root "test/e2b stack: skipped: sandboxes need root" || exit 0
stack_built || fail "$STACK_ERROR"
if stack_addr_taken "127.0.0.1:$port"; then fail "port $port is taken"; fi

(cd "$here" && { [[ -d node_modules/e2b ]] || npm ci --no-audit --no-fund --loglevel=error; })

# Template builds run apt-get in build sandboxes (test/lib/stack.sh).
stack_mirror_flags

rc=1
trap 'set +e; stack_end "$rc" 80' EXIT
stack_start "127.0.0.1:$port" "${STACK_MIRROR_FLAGS[@]}" || fail "$STACK_ERROR"

unset E2B_DEBUG E2B_DOMAIN
export E2B_API_URL="$STACK_API" E2B_SANDBOX_URL="$STACK_API" E2B_VOLUME_API_URL="$STACK_API" E2B_API_KEY="$STACK_KEY"
set +e
(cd "$here" && timeout 300 node --test --test-reporter=spec stack/*.test.mjs)
rc=$?
set -e
exit "$rc"
