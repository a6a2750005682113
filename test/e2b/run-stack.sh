#!/usr/bin/env bash
# Runs the E2B JS SDK against the whole stack: `bin/roost up` (control plane,
# proxy and a host agent with the namespace runtime), as a user of E2B would
# point the SDK at roost:
#
#   make build && bash test/e2b/run-stack.sh        # as root
#
# The data directory lives in the test cache ($ROOST_TEST_CACHE, default
# /var/tmp/roost-test-cache) and shares its base template with the Go tests.
# Needs root; skips (exit 0, saying so) otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
roost="$repo/bin/roost"
port="${ROOST_STACK_PORT:-39300}"
cache="${ROOST_TEST_CACHE:-/var/tmp/roost-test-cache}"
data="$cache/stack"

fail() { echo "test/e2b stack: $*" >&2; exit 1; }
if [[ "$(id -u)" != 0 ]]; then
	echo "test/e2b stack: skipped: sandboxes need root"
	exit 0
fi
[[ -x "$roost" && -x "$repo/bin/envd" && -x "$repo/bin/roost-init" ]] || fail "bin/roost, bin/envd or bin/roost-init missing; run 'make build' first"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is taken"; fi

(cd "$here" && { [[ -d node_modules/e2b ]] || npm ci --no-audit --no-fund --loglevel=error; })

mkdir -p "$data" "$cache/templates"
[[ -e "$data/templates" ]] || ln -s ../templates "$data/templates"

work="$(mktemp -d "${TMPDIR:-/tmp}/roost-stack.XXXXXX")"
log="$work/roost.log"
pid=""
rc=1
cleanup() {
	set +e
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
	fi
	if [[ "$rc" -ne 0 ]]; then
		echo "----- roost up log (last 80 lines) -----" >&2
		tail -n 80 "$log" >&2
	fi
	rm -rf "$work"
}
trap cleanup EXIT

key="roost_test_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ROOST_API_KEY="$key" "$roost" up --data-dir "$data" --listen "127.0.0.1:$port" >"$log" 2>&1 &
pid=$!
for _ in $(seq 300); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
	kill -0 "$pid" 2>/dev/null || fail "roost up exited"
	sleep 0.1
done

unset E2B_DEBUG E2B_DOMAIN
export E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port" E2B_API_KEY="$key"
set +e
(cd "$here" && timeout 300 node --test --test-reporter=spec stack/*.test.mjs)
rc=$?
set -e
exit "$rc"
