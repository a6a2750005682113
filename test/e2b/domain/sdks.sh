#!/usr/bin/env bash
# Runs the SDKs of run.sh inside stack.sh's environment; $1 is the
# e2b-python directory, or empty to skip the Python SDK. Each run has a
# time limit, so a hang fails instead of stalling make test.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${1:-}"
failed=()

cd "$here"
for sdk in e2b e2b-v1; do
	echo "== JS SDK $(node -p "require('./node_modules/$sdk/package.json').version") ($sdk), E2B_DOMAIN=$E2B_DOMAIN"
	ROOST_TEST_SDK=$sdk timeout --kill-after=10 150 node --test --test-reporter=spec sdk.test.mjs || failed+=("JS $sdk")
done
if [[ -n "$py" ]]; then
	echo "== Python SDK ($py), E2B_DOMAIN=$E2B_DOMAIN"
	PYTHONPATH="$py/lib:${E2B_PY_DEPS:-$py/.deps}/usr/lib/python3/dist-packages:$py/sdk" \
		PYTHONPYCACHEPREFIX="${TMPDIR:-/tmp}/roost-domain-pycache" \
		timeout --kill-after=10 150 /usr/bin/python3 sdk_test.py || failed+=("Python")
fi
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "test/e2b/domain: FAILED: ${failed[*]}" >&2
	exit 1
fi
echo "test/e2b/domain: ok"
