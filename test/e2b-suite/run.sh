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
# bin/roost up on a data directory of its own (templates shared with the Go
# tests through $ROOST_TEST_CACHE/templates, so the base template is built
# once), and at the end, also on failure or Ctrl-C, kills the sandboxes the
# suites left, stops roost up and removes the data directory. It skips (exit
# 0, saying why) when not root or when the suite is not checked out beside
# the repository.
#
# Environment:
#   ROOST_SHARED          where the suites are (default: ../shared beside the repository)
#   ROOST_SUITE_PORT      roost up's port (default 39310)
#   ROOST_SUITE_EXTENDED  0 skips the JS extended group
#   ROOST_SUITE_RESULTS   the suites' logs, kept after the run (default /var/tmp/roost-e2b-suite-results)
#   ROOST_TEST_CACHE      the shared template cache (default /var/tmp/roost-test-cache)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
roost="$repo/bin/roost"
shared="${ROOST_SHARED:-$repo/../shared}"
port="${ROOST_SUITE_PORT:-39310}"
cache="${ROOST_TEST_CACHE:-/var/tmp/roost-test-cache}"
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
	# Python test_create.py (sync and async): set_timeout(0) must end the
	# sandbox now (its on_timeout pause); roost's API refuses a timeout
	# of 0 (400), E2B's allows it (SandboxTimeoutRequest minimum 0).
	'test_keep_memory_none_defaults_to_full_memory'
)

mode="${1:-}"
case "$mode" in
js) suite="$shared/e2b-suite" name="e2b-suite" ;;
python) suite="$shared/e2b-python" name="e2b-python" ;;
*) echo "usage: $0 js|python" >&2; exit 2 ;;
esac
say() { echo "test/e2b-suite ($mode): $*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

if [[ "$(id -u)" != 0 ]]; then
	say "skipped: sandboxes need root"
	exit 0
fi
if [[ ! -f "$suite/run.sh" ]]; then
	say "skipped: $name is not checked out at $suite (ROOST_SHARED moves it)"
	exit 0
fi
[[ -x "$roost" && -x "$repo/bin/envd" && -x "$repo/bin/roost-init" ]] ||
	fail "bin/roost, bin/envd or bin/roost-init missing; run 'make build' first"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is taken (ROOST_SUITE_PORT moves it)"; fi

work="$(mktemp -d /var/tmp/roost-e2b-suite.XXXXXX)"
data="$work/data"
log="$work/roost.log"
api="http://127.0.0.1:$port"
key="roost_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
roost_pid=""
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

# kill_sandboxes destroys every sandbox of this roost up, running or paused.
kill_sandboxes() {
	local ids id
	ids="$(ROOST_API_URL="$api" ROOST_API_KEY="$key" "$roost" sandbox list 2>/dev/null | awk 'NR > 1 { print $1 }')" || return 0
	for id in $ids; do
		ROOST_API_URL="$api" ROOST_API_KEY="$key" "$roost" sandbox kill "$id" >/dev/null 2>&1 ||
			say "could not kill sandbox $id" >&2
	done
}

stop_roost() {
	kill -TERM "$roost_pid" 2>/dev/null || return 0
	for _ in $(seq 100); do kill -0 "$roost_pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$roost_pid" 2>/dev/null || true
}

cleanup() {
	set +e
	trap - EXIT INT TERM
	[[ -n "$suite_pid" ]] && kill_tree "$suite_pid"
	if [[ -n "$roost_pid" ]]; then
		kill_sandboxes
		stop_roost
	fi
	if [[ "$rc" -ne 0 && -s "$log" ]]; then
		echo "----- roost up log (last 60 lines) -----" >&2
		tail -n 60 "$log" >&2
	fi
	# The runtime leaves mounts in the data directory (a template's
	# read-only lower layer, the layer of a sandbox whose kill failed):
	# removing through them would reach the template cache.
	if unmount_below "$work"; then
		rm -rf --one-file-system "$work"
	else
		say "left $work: mounts remain below it" >&2
	fi
}

# mounts_below lists the mount points below dir, deepest first.
mounts_below() {
	findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r
}

# unmount_below unmounts everything below dir; false if something stays.
unmount_below() {
	local m
	for m in $(mounts_below "$1"); do
		umount "$m" 2>/dev/null || umount --lazy "$m" || true
	done
	[[ -z "$(mounts_below "$1")" ]]
}
trap cleanup EXIT
trap 'rc=130; exit 130' INT TERM

start_roost() {
	mkdir -p "$data" "$cache/templates"
	ln -s "$cache/templates" "$data/templates"
	# --no-prune: other roost processes on this host (developers' stacks,
	# other tests) own the roost-prefixed leftovers this one did not make.
	ROOST_API_KEY="$key" "$roost" up --no-prune --data-dir "$data" --listen "127.0.0.1:$port" >"$log" 2>&1 &
	roost_pid=$!
	for _ in $(seq 300); do
		curl -fs -o /dev/null -m 2 "$api/health" && return 0
		kill -0 "$roost_pid" 2>/dev/null || fail "roost up exited"
		sleep 0.1
	done
	fail "roost up did not answer $api/health within 30 s"
}

# run_suite runs the suite's run.sh with its arguments in the background (so
# that Ctrl-C reaches the trap at once), its output to the terminal and to
# $out; sets suite_rc and passed (from the summary line).
run_suite() {
	local out=$1; shift
	set +e
	(E2B_API_URL="$api" E2B_SANDBOX_URL="$api" E2B_API_KEY="$key" bash "$suite/run.sh" "$@" 2>&1 | tee "$out") &
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

start_roost
say "roost up on $api, data in $data"
"run_$mode"
rc=0
say "ok"
