#!/usr/bin/env bash
# make test-e2b-domain: E2B's SDKs against roost in domain + TLS mode, with
# nothing but E2B_DOMAIN and E2B_API_KEY (E2B_API_URL and E2B_SANDBOX_URL
# unset), trusting roost's private CA, the domain resolved to a loopback
# address by a preload (resolve.mjs, pyresolve/) instead of the machine's
# DNS. Each SDK creates a secure sandbox, runs a command, writes and reads a
# file, opens a PTY, fetches signed file URLs, reaches a server in the
# sandbox, pauses and resumes it, and kills it:
#
#   - the JS SDK, newest 2.x (e2b) and newest 1.x (e2b-v1), sdk.test.mjs;
#   - E2B's Python SDK of ../shared/e2b-python, sdk_test.py (skipped,
#     saying so, when that directory is absent).
#
#   make build && bash test/e2b/domain/run.sh         # as root
#
# stack.sh starts and stops roost up (see it for ROOST_TEST_DOMAIN,
# ROOST_TEST_ADDR, ROOST_TEST_CACHE); ROOST_SHARED is where e2b-python is
# (default ../shared beside the repository). Skips (exit 0) when not root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
shared="${ROOST_SHARED:-$(cd "$repo/.." && pwd)/shared}"

if [[ "$(id -u)" != 0 ]]; then
	echo "test/e2b/domain: skipped: sandboxes and port 443 need root"
	exit 0
fi
(cd "$here" && { [[ -d node_modules/e2b && -d node_modules/e2b-v1 ]] || npm ci --no-audit --no-fund --loglevel=error; })

py=""
if [[ -f "$shared/e2b-python/setup.sh" ]]; then
	bash "$shared/e2b-python/setup.sh" >/dev/null || { echo "test/e2b/domain: $shared/e2b-python/setup.sh failed" >&2; exit 1; }
	py="$shared/e2b-python"
else
	echo "test/e2b/domain: the Python SDK is skipped: $shared/e2b-python is absent"
fi
exec bash "$here/stack.sh" bash "$here/sdks.sh" "$py"
