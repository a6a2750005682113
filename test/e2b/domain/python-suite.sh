#!/usr/bin/env bash
# make test-e2b-python-domain: E2B's Python SDK tests (../shared/e2b-python,
# its core group, through its own run.sh) in domain + TLS mode: the SDK sees
# only E2B_DOMAIN and E2B_API_KEY (run.sh always sets E2B_API_URL and
# E2B_SANDBOX_URL; ROOST_TEST_E2B_DOMAIN_ONLY=1 has every Python process
# drop them, see pyresolve/roost_resolve.py), against stack.sh's roost up.
# At least PY_MIN_PASSED (default 240) of the group's 246 tests must pass.
#
#   make build && bash test/e2b/domain/python-suite.sh     # as root
#
# ROOST_SHARED is where e2b-python is (default ../shared beside the
# repository); results go to ROOST_PY_DOMAIN_RESULTS (default
# /var/tmp/roost-e2b-python-domain). Skips (exit 0, saying why) when not
# root or when e2b-python is absent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
shared="${ROOST_SHARED:-$(cd "$repo/.." && pwd)/shared}"
min="${PY_MIN_PASSED:-240}"
results="${ROOST_PY_DOMAIN_RESULTS:-/var/tmp/roost-e2b-python-domain}"

if [[ "$(id -u)" != 0 ]]; then
	echo "test/e2b/domain python: skipped: sandboxes and port 443 need root"
	exit 0
fi
if [[ ! -f "$shared/e2b-python/run.sh" ]]; then
	echo "test/e2b/domain python: skipped: $shared/e2b-python is absent"
	exit 0
fi
mkdir -p "$results"
out="$results/summary.txt"
# E2B_API_URL is for run.sh's own banner only; the SDK never sees it. Its
# preflight curl and its warm-up (smoke.py, which sets the URLs itself)
# cannot run in domain mode.
set +e
bash "$here/stack.sh" env ROOST_TEST_E2B_DOMAIN_ONLY=1 E2B_PY_PREFLIGHT=0 E2B_PY_WARMUP_S=0 \
	E2B_PY_RESULTS="$results" E2B_API_URL="https://api.${ROOST_TEST_DOMAIN:-roost.test}" \
	bash "$shared/e2b-python/run.sh" core 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
passed=$(sed -n 's/^e2b-python: \([0-9]*\) passed.*/\1/p' "$out" | tail -n 1)
if [[ -z "$passed" ]]; then
	echo "test/e2b/domain python: FAILED: no summary (exit $rc); see $results" >&2
	exit 1
fi
if [[ "$passed" -lt "$min" ]]; then
	echo "test/e2b/domain python: FAILED: $passed passed, fewer than $min" >&2
	exit 1
fi
echo "test/e2b/domain python: ok: $passed passed (at least $min needed) in domain + TLS mode"
