#!/usr/bin/env bash
# Runs a command against `bin/roost up` in domain + TLS mode: roost serves
# https://api.$ROOST_TEST_DOMAIN and https://{port}-{id}.$ROOST_TEST_DOMAIN on
# $ROOST_TEST_ADDR:443 with its private CA, and the command runs with what a
# user of E2B's SDKs sets (E2B_DOMAIN, E2B_API_KEY; E2B_API_URL and
# E2B_SANDBOX_URL unset) plus trust in the CA and the name resolution:
#
#   bash test/e2b/domain/stack.sh node my-test.mjs          # as root, after make build
#
# The command's environment:
#   E2B_DOMAIN, E2B_API_KEY              as for E2B's cloud (a key in E2B's format)
#   NODE_EXTRA_CA_CERTS, SSL_CERT_FILE,  roost's CA (Node; Python, Go, OpenSSL; requests)
#   REQUESTS_CA_BUNDLE, ROOST_TEST_CA
#   NODE_OPTIONS=--import=resolve.mjs    Node resolves the domain and its subdomains to
#   PYTHONUSERBASE=<a .pth importing     $ROOST_TEST_ADDR; so does Python (/usr/bin/python3's
#     pyresolve/roost_resolve.py>        version), even when a runner sets PYTHONPATH
#   ROOST_TEST_DOMAIN, ROOST_TEST_ADDR   the same, for curl --resolve and the like
#
# ROOST_TEST_E2B_DOMAIN_ONLY=1 in the command's environment makes Node and
# Python processes drop E2B_API_URL and E2B_SANDBOX_URL at start-up, for
# runners that always set them (see resolve.mjs, pyresolve/roost_resolve.py).
# E2B's JS suite in domain mode, for one:
#
#   bash test/e2b/domain/stack.sh env ROOST_TEST_E2B_DOMAIN_ONLY=1 E2B_SUITE_PREFLIGHT=0 \
#     E2B_API_URL=https://api.roost.test bash ../shared/e2b-suite/run.sh core
#
# Settings: ROOST_TEST_DOMAIN (default roost.test), ROOST_TEST_ADDR (a
# loopback address whose port 443 is free; default 127.0.0.3, away from
# others' 127.0.0.1), ROOST_TEST_CACHE (default /var/tmp/roost-test-cache:
# roost up's data directory, fresh for each run and removed with its
# sandboxes at the end by test/lib/stack.sh, shares the base template kept
# there). Exits with the command's status; 2 when the stack cannot start
# (port taken, roost up failed); 0 with a message when not root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
domain="${ROOST_TEST_DOMAIN:-roost.test}"
addr="${ROOST_TEST_ADDR:-127.0.0.3}"
STACK_NAME=e2b-domain
source "$here/../../lib/stack.sh"

die() { echo "test/e2b/domain: $*" >&2; exit 2; }
[[ $# -gt 0 ]] || die "usage: stack.sh COMMAND [ARGS...]"
stack_need_root "test/e2b/domain: skipped: sandboxes and port 443 need root" || exit 0
stack_built || die "$STACK_ERROR"
if stack_addr_taken "$addr:443"; then
	die "port 443 on $addr is taken (set ROOST_TEST_ADDR to another loopback address)"
fi

rc=2
trap 'set +e; stack_end "$rc" 60' EXIT
STACK_KEY="$(stack_e2b_key)"
# --no-prune: other stacks and tests may run sandboxes on this host.
stack_start_domain "$domain" "$addr:443" --no-prune || die "$STACK_ERROR"

unset E2B_API_URL E2B_SANDBOX_URL E2B_DEBUG
unset E2B_VALIDATE_API_KEY
export E2B_DOMAIN="$domain" E2B_API_KEY="$STACK_KEY"
export NODE_EXTRA_CA_CERTS="$STACK_CA" SSL_CERT_FILE="$STACK_CA" REQUESTS_CA_BUNDLE="$STACK_CA" ROOST_TEST_CA="$STACK_CA"
export ROOST_TEST_DOMAIN="$domain" ROOST_TEST_ADDR="$addr"
export NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--import=$here/resolve.mjs"
pysite="$STACK_DIR/pyuser/lib/$(/usr/bin/python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')/site-packages"
mkdir -p "$pysite"
echo "import sys; sys.path.append('$here/pyresolve'); import roost_resolve" >"$pysite/roost-resolve.pth"
export PYTHONUSERBASE="$STACK_DIR/pyuser"
unset PYTHONNOUSERSITE
set +e
"$@"
rc=$?
set -e
exit "$rc"
