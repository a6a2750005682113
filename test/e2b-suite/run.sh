#!/usr/bin/env bash
# Runs E2B's own SDK test suites against a fresh `roost up` and checks
# roost's targets for them:
#
#   bash test/e2b-suite/run.sh js       # make test-e2b-suite
#   bash test/e2b-suite/run.sh python   # make test-e2b-python
#
# js: E2B's JS SDK suite (../shared/e2b-suite), its core group with the
# suite's own SDK (the 2.45.0 source its tests come with) and with the newest
# published SDK it pins (e2b-2.51.0): at least JS_MIN_PASSED of its 129 tests
# pass with each. Then its extended group with both, counted and reported
# only (fork and snapshots are not served yet).
# python: E2B's Python SDK 2.34.0 tests (../shared/e2b-python), core group,
# in URL mode (E2B_API_URL and E2B_SANDBOX_URL): at least PY_MIN_PASSED of
# its 246 tests pass.
#
# The script builds nothing (the make targets depend on build). It starts
# bin/roost up by test/lib/stack.sh, on a data directory of its own
# (templates shared with the Go tests through $ROOST_TEST_CACHE/templates,
# so the base template is built once), and at the end, also on failure or
# Ctrl-C, stops the suite, kills the sandboxes it left, stops roost up and
# removes the data directory. It skips (exit
# 0, saying why) when not root or when the suite is not checked out beside
# the repository.
#
# Environment:
#   ROOST_SHARED          where the suites are (default: ../shared beside the repository)
#   ROOST_SUITE_PORT      roost up's port (default 39310)
#   ROOST_SUITE_EXTENDED  0 skips the JS extended group
#   ROOST_SUITE_RESULTS   the suites' logs, kept after the run (default /var/tmp/roost-e2b-suite-results)
#   ROOST_TEST_CACHE      the shared template cache (default /var/tmp/roost-test-cache)
#   ROOST_SUITE_WARM_POOL roost up's --warm-pool (default: its own, base=2;
#                         `make test-e2b-python` runs with base=0, so that
#                         the suites run with warm pools and without)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
shared="${ROOST_SHARED:-$repo/../shared}"
port="${ROOST_SUITE_PORT:-39310}"
results="${ROOST_SUITE_RESULTS:-/var/tmp/roost-e2b-suite-results}"

# The targets: passed tests out of the core group (JS 129, Python 246).
JS_MIN_PASSED=128
PY_MIN_PASSED=240
JS_SDKS=(src e2b-2.51.0)
# Tests known to fail, now and then for a reason that is not roost's, or
# until roost changes; a failure of any other test is printed as unexpected
# (the targets decide either way).
KNOWN_FAILURES=(
	# snapshot.test.ts: runs `sleep 2 && echo done > file` in the background,
	# pauses, resumes, waits 2 s and expects the file. It passes only when
	# the API calls around the wait (about 150 ms against a local roost)
	# outlast bash's login start-up (20-80 ms here) plus the pause, during
	# which bash is frozen: a race on the clock, lost or won by a few ms.
	'pause and resume a sandbox with completed long running process'
)

mode="${1:-}"
case "$mode" in
js) suite="$shared/e2b-suite" name="e2b-suite" ;;
python) suite="$shared/e2b-python" name="e2b-python" ;;
*) echo "usage: $0 js|python" >&2; exit 2 ;;
esac
STACK_NAME=e2b-suite
source "$here/../lib/stack.sh"

say() { echo "test/e2b-suite ($mode): $*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

stack_need_root "test/e2b-suite ($mode): skipped: sandboxes need root" || exit 0
if [[ ! -f "$suite/run.sh" ]]; then
	say "skipped: $name is not checked out at $suite (ROOST_SHARED moves it)"
	exit 0
fi
stack_built || fail "$STACK_ERROR"
if stack_addr_taken "127.0.0.1:$port"; then fail "port $port is taken (ROOST_SUITE_PORT moves it)"; fi

suite_pid=""
rc=1

# kill_tree asks a process and everything it started to stop, children
# first, by process id (the suites' timeout(1) runs in a process
# group of its own, which a group kill would miss).
kill_tree() {
	local pid=$1 child
	for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do kill_tree "$child"; done
	kill -TERM "$pid" 2>/dev/null || true
}

cleanup() {
	set +e
	trap - EXIT INT TERM
	[[ -n "$suite_pid" ]] && kill_tree "$suite_pid"
	stack_end "$rc" 60
}
trap cleanup EXIT
trap 'rc=130; exit 130' INT TERM

# run_suite runs the suite's run.sh with its arguments in the background (so
# that Ctrl-C reaches the trap at once), its output to the terminal and to
# $out; sets suite_rc and passed (from the summary line).
run_suite() {
	local out=$1; shift
	set +e
	(E2B_API_URL="$STACK_API" E2B_SANDBOX_URL="$STACK_API" E2B_API_KEY="$STACK_KEY" bash "$suite/run.sh" "$@" 2>&1 | tee "$out") &
	suite_pid=$!
	wait "$suite_pid"
	suite_rc=$?
	set -e
	suite_pid=""
	passed="$(sed -n "s/^$name: \([0-9]*\) passed.*/\1/p" "$out" | tail -n 1)"
	passed="${passed:-0}"
}

# unexpected_failures prints the failing tests listed in a run's summary
# ($1) that KNOWN_FAILURES does not name.
unexpected_failures() {
	local line known name
	sed -n '/^failing (/,/^most common errors:/p' "$1" | grep '^  .* > ' | while IFS= read -r line; do
		known=0
		for name in "${KNOWN_FAILURES[@]}"; do
			[[ "$line" == *" > $name:"* ]] && known=1
		done
		[[ $known == 1 ]] || echo "$line"
	done
}

# check_run reports a run against its target and says whether it met it.
check_run() {
	local label=$1 summary=$2 min=$3 unexpected
	say "$label: $passed passed (target $min), run.sh exit $suite_rc"
	unexpected="$(unexpected_failures "$summary")"
	[[ -z "$unexpected" ]] || say "$label: failing, not known to fail:"$'\n'"$unexpected"
	[[ "$suite_rc" != 2 && "$passed" -ge "$min" ]]
}

run_js() {
	local sdk group ok=1 started
	declare -A core_passed
	for sdk in "${JS_SDKS[@]}"; do
		started=$SECONDS
		say "core group, SDK $sdk"
		mkdir -p "$results/js/$sdk-core"
		E2B_SUITE_SDK="$sdk" E2B_SUITE_RESULTS="$results/js/$sdk-core" \
			run_suite "$results/js/$sdk-core/summary.txt" core
		core_passed[$sdk]=$passed
		check_run "core, SDK $sdk" "$results/js/$sdk-core/summary.txt" "$JS_MIN_PASSED" || ok=0
		say "core, SDK $sdk: $((SECONDS - started)) s"
	done
	if [[ "${ROOST_SUITE_EXTENDED:-1}" != 0 ]]; then
		for sdk in "${JS_SDKS[@]}"; do
			started=$SECONDS
			say "extended group, SDK $sdk (reported, not checked)"
			mkdir -p "$results/js/$sdk-extended"
			E2B_SUITE_SDK="$sdk" E2B_SUITE_RESULTS="$results/js/$sdk-extended" E2B_SUITE_WARMUP_S=0 \
				run_suite "$results/js/$sdk-extended/summary.txt" extended
			say "extended, SDK $sdk: $(tail -n 1 "$results/js/$sdk-extended/summary.txt"), $((SECONDS - started)) s"
		done
	fi
	for sdk in "${JS_SDKS[@]}"; do
		say "core, SDK $sdk: ${core_passed[$sdk]} passed, target $JS_MIN_PASSED"
	done
	[[ $ok == 1 ]] || fail "core below the target with some SDK (logs: $results/js)"
}

run_python() {
	local started=$SECONDS
	mkdir -p "$results/python"
	E2B_PY_RESULTS="$results/python" run_suite "$results/python/summary.txt" core
	say "core: $((SECONDS - started)) s"
	check_run core "$results/python/summary.txt" "$PY_MIN_PASSED" ||
		fail "core below the target (logs: $results/python)"
}

# --no-prune: other roost processes on this host (developers' stacks,
# other tests) own the roost-prefixed leftovers this one did not make.
up_args=(--no-prune)
[[ -z "${ROOST_SUITE_WARM_POOL:-}" ]] || up_args+=(--warm-pool "$ROOST_SUITE_WARM_POOL")
stack_start "127.0.0.1:$port" "${up_args[@]}" || fail "$STACK_ERROR"
say "roost up on $STACK_API, data in $STACK_DATA, warm pool: ${ROOST_SUITE_WARM_POOL:-the default}"
"run_$mode"
rc=0
say "ok"
