#!/usr/bin/env bash
# The E2B version matrix: several releases of the E2B JS SDK and the E2B CLI
# (npm @e2b/cli) against one `bin/roost up`, each doing what a first program
# does (create, command, file, PTY, pause, connect, kill; the CLI's list,
# terminal, logs, metrics, kill). Prints a table of release × step.
#
#   make build && bash test/e2b/matrix/run.sh        # as root; make test-e2b-matrix
#
# The releases that read E2B_API_URL and E2B_SANDBOX_URL and the CLI run
# against a roost up on plain HTTP on loopback, with an API key in E2B's
# format (e2b_ and 40 hex digits: SDK releases 2.3x-2.45 refuse any other
# before sending a request); the releases that know only E2B_DOMAIN, and
# the CLI again, run in domain + TLS mode through test/e2b/domain/stack.sh
# (see matrix.mjs). roost up runs on a data directory of its own that
# shares the base template with the Go tests ($ROOST_TEST_CACHE, default
# /var/tmp/roost-test-cache), and is taken down with its sandboxes by
# test/lib/stack.sh. Env: ROOST_MATRIX_PORT (default 39310) and the domain
# harness's ROOST_TEST_*. Needs root; skips (exit 0, saying so) otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port="${ROOST_MATRIX_PORT:-39310}"
STACK_NAME=e2b-matrix
source "$here/../../lib/stack.sh"

fail() { echo "test/e2b matrix: $*" >&2; exit 1; }
stack_need_root "test/e2b matrix: skipped: sandboxes need root" || exit 0
stack_built || fail "$STACK_ERROR"
[[ -x /usr/bin/python3 ]] || fail "/usr/bin/python3 missing: the CLI's terminal commands run on a PTY made by ptybridge.py"
if stack_addr_taken "127.0.0.1:$port"; then fail "port $port is taken"; fi

# npm ls fails when node_modules does not match package.json.
(cd "$here" && { npm ls --depth=0 >/dev/null 2>&1 || npm ci --no-audit --no-fund --loglevel=error; })

rc=1
trap 'set +e; stack_end "$rc" 40' EXIT
STACK_KEY="$(stack_e2b_key)"
# --no-prune: other roost instances on this host keep their sandboxes.
stack_start "127.0.0.1:$port" --no-prune || fail "$STACK_ERROR"
# The runs' reports, kept until the end with the stack's directory.
reports="$STACK_DIR/reports"
mkdir "$reports"

export ROOST_MATRIX_URL="$STACK_API" E2B_API_KEY="$STACK_KEY"
cd "$here"
# A run exits 1 when one of its steps failed; the report says which.
timeout 300 node matrix.mjs run url "$reports/1-url.json" || true
# The domain harness starts a roost up of its own, on port 443 of a
# loopback address; this one has done its part.
stack_stop
timeout 300 bash "$here/../domain/stack.sh" node "$here/matrix.mjs" run domain "$reports/2-domain.json" || true
set +e
node matrix.mjs report "$reports"/*.json
rc=$?
set -e
exit "$rc"
