#!/usr/bin/env bash
# Runs the E2B JS SDK conformance suite against a freshly started bin/envd.
#
#   make envd && bash test/e2b/run.sh
#
# Starts envd on :49983 as the current user, waits for GET /health, runs
# node's test runner on test/e2b/*.test.mjs with E2B_DEBUG=true (the SDK then
# talks to localhost:49983 directly), and always stops envd. The exit code is
# the test runner's. Env: ENVD (binary, default bin/envd), ENVD_LOG_LEVEL
# (default debug), KEEP_ENVD_LOG=1 (print envd's log even on success).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
envd="${ENVD:-$repo/bin/envd}"
port=49983

fail() { echo "test/e2b: $*" >&2; exit 1; }

[[ -x "$envd" ]] || fail "$envd not found or not executable; run 'make envd' first"
command -v node >/dev/null || fail "node not found"
command -v npm >/dev/null || fail "npm not found"

work="$(mktemp -d "${TMPDIR:-/tmp}/roost-e2b.XXXXXX")"
log="$work/envd.log"
envd_pid=""
rc=1

cleanup() {
	set +e
	trap '' PIPE # a closed stderr must not stop the clean-up half way
	if [[ -n "$envd_pid" ]] && kill -0 "$envd_pid" 2>/dev/null; then
		kill -TERM "$envd_pid" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$envd_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$envd_pid" 2>/dev/null
		wait "$envd_pid" 2>/dev/null
	fi
	if [[ "$rc" -ne 0 || -n "${KEEP_ENVD_LOG:-}" ]] && [[ -s "$log" ]]; then
		echo "----- envd log ($log) -----" >&2
		cat "$log" >&2
		echo "----- end of envd log -----" >&2
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Install the pinned SDK when node_modules is missing or was installed from a
# different lockfile.
lock_sum="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"
stamp="$here/node_modules/.roost-lock-sha256"
if [[ ! -d "$here/node_modules/e2b" || "$(cat "$stamp" 2>/dev/null || true)" != "$lock_sum" ]]; then
	echo "test/e2b: npm ci" >&2
	if ! (cd "$here" && npm ci --no-audit --no-fund --no-progress </dev/null >"$work/npm.log" 2>&1); then
		cat "$work/npm.log" >&2
		fail "npm ci failed"
	fi
	echo "$lock_sum" >"$stamp"
fi

# Something already listening would answer the SDK instead of our envd.
port_open() { (exec 3<>"/dev/tcp/$1/$port") 2>/dev/null; }
for host in 127.0.0.1 ::1; do
	if port_open "$host"; then
		fail "port $port is already in use on $host (another envd?); find it with: ss -ltnp 'sport = :$port'"
	fi
done

# The SDK runs every command as `bash -l -c`, so a login shell that stalls in
# the profile scripts (e.g. on a stale lock left by a killed `pyenv rehash`,
# ~/.pyenv/shims/.pyenv-shim) makes every test time out. Say so up front.
if ! timeout 10 bash -l -c true </dev/null >/dev/null 2>&1; then
	fail "'bash -l -c true' did not finish within 10 s for $(id -un); check the login profile scripts (a stale lock file?)"
fi
# The tests compare a command's stdout and stderr exactly, so a profile
# script that prints (a missing file it sources, a tool it runs that is not
# installed) fails them; name the cause instead.
profile_noise="$(bash -l -c true </dev/null 2>&1 | head -n 3)"
if [[ -n "$profile_noise" ]]; then
	fail "'bash -l -c true' prints for $(id -un), which every command's output would carry; fix the login profile scripts. It printed: $profile_noise"
fi

"$envd" -addr ":$port" -log-level "${ENVD_LOG_LEVEL:-debug}" </dev/null >"$log" 2>&1 &
envd_pid=$!

# Wait (bounded) for GET /health to answer 204, with plain bash: no curl needed.
health() (
	exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
	printf 'GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
	IFS= read -r -t 1 status <&3 || exit 1
	[[ "$status" == "HTTP/1.1 204"* ]]
)
deadline=$((SECONDS + 10))
until health 2>/dev/null; do
	kill -0 "$envd_pid" 2>/dev/null || fail "envd exited during start-up"
	((SECONDS < deadline)) || fail "envd did not answer GET /health with 204 within 10 s"
	sleep 0.1
done

# The SDK must reach this envd and nothing else: E2B_SANDBOX_URL or
# E2B_API_URL would redirect it even in debug mode.
unset E2B_SANDBOX_URL E2B_API_URL E2B_API_KEY E2B_ACCESS_TOKEN E2B_DOMAIN
export E2B_DEBUG=true
export ROOST_E2B_TMPDIR="$work"
export NO_PROXY="localhost,127.0.0.1,::1${NO_PROXY:+,$NO_PROXY}"

cd "$here"
shopt -s nullglob
tests=(./*.test.mjs)
(( ${#tests[@]} > 0 )) || fail "no test files in $here"
# The outer timeout only guards against a hung runner; each test has its own.
rc=0
timeout --kill-after=10 180 node --test --test-reporter=spec "${tests[@]}" </dev/null || rc=$?
exit "$rc"
