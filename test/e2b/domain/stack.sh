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
# the data directory is its domain/, which shares the base template and
# keeps the CA between runs). Exits with the command's status; 2 when the
# stack cannot start (port taken, roost up failed); 0 with a message when
# not root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
roost="$repo/bin/roost"
domain="${ROOST_TEST_DOMAIN:-roost.test}"
addr="${ROOST_TEST_ADDR:-127.0.0.3}"
cache="${ROOST_TEST_CACHE:-/var/tmp/roost-test-cache}"
data="$cache/domain"
ca="$data/tls/$domain/ca.pem"

die() { echo "test/e2b/domain: $*" >&2; exit 2; }
[[ $# -gt 0 ]] || die "usage: stack.sh COMMAND [ARGS...]"
if [[ "$(id -u)" != 0 ]]; then
	echo "test/e2b/domain: skipped: sandboxes and port 443 need root"
	exit 0
fi
[[ -x "$roost" && -x "$repo/bin/envd" && -x "$repo/bin/roost-init" ]] || die "bin/roost, bin/envd or bin/roost-init missing; run 'make build' first"
if (exec 3<>"/dev/tcp/$addr/443") 2>/dev/null; then
	die "port 443 on $addr is taken (set ROOST_TEST_ADDR to another loopback address)"
fi

mkdir -p "$data" "$cache/templates"
[[ -e "$data/templates" ]] || ln -s ../templates "$data/templates"

work="$(mktemp -d "${TMPDIR:-/tmp}/roost-domain.XXXXXX")"
log="$work/roost.log"
pid=""
rc=2
cleanup() {
	set +e
	if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null
	fi
	if [[ "$rc" -ne 0 ]]; then
		echo "----- roost up log (last 60 lines) -----" >&2
		tail -n 60 "$log" >&2
	fi
	rm -rf "$work"
}
trap cleanup EXIT

key="e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# --no-prune: other stacks and tests may run sandboxes on this host.
ROOST_API_KEY="$key" "$roost" up --data-dir "$data" --listen "$addr:443" --domain "$domain" --tls --no-prune >"$log" 2>&1 &
pid=$!
for i in $(seq 300); do
	if [[ -f "$ca" ]] && curl -sf -o /dev/null --cacert "$ca" --resolve "api.$domain:443:$addr" "https://api.$domain/health"; then break; fi
	kill -0 "$pid" 2>/dev/null || die "roost up exited"
	[[ $i -lt 300 ]] || die "roost up did not answer at https://api.$domain/health within 30 s"
	sleep 0.1
done

unset E2B_API_URL E2B_SANDBOX_URL E2B_DEBUG
unset E2B_VALIDATE_API_KEY
export E2B_DOMAIN="$domain" E2B_API_KEY="$key"
export NODE_EXTRA_CA_CERTS="$ca" SSL_CERT_FILE="$ca" REQUESTS_CA_BUNDLE="$ca" ROOST_TEST_CA="$ca"
export ROOST_TEST_DOMAIN="$domain" ROOST_TEST_ADDR="$addr"
export NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--import=$here/resolve.mjs"
pysite="$work/pyuser/lib/$(/usr/bin/python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')/site-packages"
mkdir -p "$pysite"
echo "import sys; sys.path.append('$here/pyresolve'); import roost_resolve" >"$pysite/roost-resolve.pth"
export PYTHONUSERBASE="$work/pyuser"
unset PYTHONNOUSERSITE
set +e
"$@"
rc=$?
set -e
exit "$rc"
