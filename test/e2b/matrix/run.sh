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
# (see matrix.mjs). The data directory lives in the test cache
# ($ROOST_TEST_CACHE, default /var/tmp/roost-test-cache) and shares its base
# template with the Go tests. Env: ROOST_MATRIX_PORT (default 39310),
# ROOST_MATRIX_DATA (the data directory), and the domain harness's
# ROOST_TEST_*. Needs root; skips (exit 0, saying so) otherwise.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
roost="$repo/bin/roost"
port="${ROOST_MATRIX_PORT:-39310}"
cache="${ROOST_TEST_CACHE:-/var/tmp/roost-test-cache}"
data="${ROOST_MATRIX_DATA:-$cache/matrix}"

fail() { echo "test/e2b matrix: $*" >&2; exit 1; }
if [[ "$(id -u)" != 0 ]]; then
	echo "test/e2b matrix: skipped: sandboxes need root"
	exit 0
fi
[[ -x "$roost" && -x "$repo/bin/envd" && -x "$repo/bin/roost-init" ]] || fail "bin/roost, bin/envd or bin/roost-init missing; run 'make build' first"
[[ -x /usr/bin/python3 ]] || fail "/usr/bin/python3 missing: the CLI's terminal commands run on a PTY made by ptybridge.py"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is taken"; fi

# npm ls fails when node_modules does not match package.json.
(cd "$here" && { npm ls --depth=0 >/dev/null 2>&1 || npm ci --no-audit --no-fund --loglevel=error; })

mkdir -p "$data" "$cache/templates"
[[ -e "$data/templates" ]] || ln -s "$cache/templates" "$data/templates"

work="$(mktemp -d "${TMPDIR:-/tmp}/roost-matrix.XXXXXX")"
log="$work/roost.log"
pid=""
rc=1
stop_roost() {
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" || true
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	pid=""
}
cleanup() {
	set +e
	stop_roost
	if [[ "$rc" -ne 0 ]]; then
		echo "----- roost up log (last 40 lines) -----" >&2
		tail -n 40 "$log" >&2
	fi
	rm -rf "$work"
}
trap cleanup EXIT

key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# --no-prune: other roost instances on this host keep their sandboxes.
ROOST_API_KEY="$key" "$roost" up --data-dir "$data" --listen "127.0.0.1:$port" \
	--no-prune >"$log" 2>&1 &
pid=$!
for _ in $(seq 300); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
	kill -0 "$pid" 2>/dev/null || fail "roost up exited"
	sleep 0.1
done

export ROOST_MATRIX_URL="http://127.0.0.1:$port" E2B_API_KEY="$key"
cd "$here"
# A run exits 1 when one of its steps failed; the report says which.
timeout 300 node matrix.mjs run url "$work/1-url.json" || true
# The domain harness starts a roost up of its own, on port 443 of a
# loopback address; this one has done its part.
stop_roost
timeout 300 bash "$here/../domain/stack.sh" node "$here/matrix.mjs" run domain "$work/2-domain.json" || true
set +e
node matrix.mjs report "$work"/*.json
rc=$?
set -e
exit "$rc"
