# shellcheck shell=bash
# A test stack: one `bin/roost up` on a data directory of its own, started
# for a test script and taken down completely after it. Sourced, never run:
#
#   source "$repo/test/lib/stack.sh"
#   STACK_NAME=my-test                     # names the directory (default stack)
#   STACK_KEY="$(stack_e2b_key)"           # optional: a key in E2B's format
#   stack_start 127.0.0.1:39300 --no-prune || fail "$STACK_ERROR"
#   ... E2B_API_URL="$STACK_API" E2B_API_KEY="$STACK_KEY" ...
#   stack_end "$rc" 60                     # in the caller's EXIT trap
#
# stack_start_domain DOMAIN ADDR [flags] starts roost up --domain DOMAIN
# --tls on ADDR instead; STACK_CA is then its CA and STACK_CURL the curl
# options that trust it and resolve api.DOMAIN to ADDR.
#
# After a start: STACK_DIR (a fresh directory below /var/tmp, removed by
# stack_end; the caller may keep files of its own in it), STACK_DATA (roost
# up's data directory in it, whose templates are a link to
# $ROOST_TEST_CACHE/templates, so the base template is built once for all
# tests), STACK_LOG (roost up's output), STACK_KEY, STACK_API (the API's
# URL), STACK_PID. The library sets no traps and never exits: the caller
# decides what a failure prints and which status it exits with.

# STACK_REPO is the checkout whose bin/roost runs.
STACK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# STACK_CACHE holds the template cache shared with the Go tests.
STACK_CACHE="${ROOST_TEST_CACHE:-/var/tmp/roost-test-cache}"
STACK_NAME="${STACK_NAME:-stack}"
STACK_KEY="${STACK_KEY:-}"
STACK_DIR=""
STACK_DATA=""
STACK_LOG=""
STACK_API=""
STACK_CA=""
STACK_PID=""
STACK_ERROR=""
STACK_CURL=()

# stack_need_root says whether this runs as root, as sandboxes need; when
# not, it prints MESSAGE (the caller's "skipped: ...") and returns 1.
stack_need_root() {
	[[ "$(id -u)" == 0 ]] && return 0
	echo "$1"
	return 1
}

# stack_built says whether make build has made the binaries roost up needs.
stack_built() {
	[[ -x "$STACK_REPO/bin/roost" && -x "$STACK_REPO/bin/envd" && -x "$STACK_REPO/bin/roost-init" ]] && return 0
	STACK_ERROR="bin/roost, bin/envd or bin/roost-init missing; run 'make build' first"
	return 1
}

# stack_roost_key prints a new API key in roost's format.
stack_roost_key() { echo "roost_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }

# stack_e2b_key prints a new API key in E2B's format (e2b_ and 40 hex
# digits), which some E2B SDK releases insist on before sending a request.
stack_e2b_key() { echo "e2b_$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }

# stack_addr_taken says whether something listens on HOST:PORT.
# stack_mirror_flags fills the array STACK_MIRROR_FLAGS with what lets
# template builds reach the Debian mirror base's sources name
# (deb.debian.org) where it resolves to an address sandboxes may not reach
# (a local mirror on a private or documentation address): that address
# alone is opened.
stack_mirror_flags() {
	STACK_MIRROR_FLAGS=()
	local addr _
	while read -r addr _; do
		STACK_MIRROR_FLAGS+=(--allow-sandbox-cidr "$addr/32")
	done < <(getent ahostsv4 deb.debian.org 2>/dev/null | awk '$2 == "STREAM"')
}

stack_addr_taken() {
	(exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# stack_start ADDR [roost up flags...] starts roost up listening on ADDR
# (host:port) and waits until it answers /health. On failure it sets
# STACK_ERROR and returns 1; stack_end still cleans up.
stack_start() {
	local addr=$1
	shift
	STACK_API="http://$addr"
	STACK_CURL=()
	stack_launch "$addr" "$@"
}

# stack_start_domain DOMAIN ADDR [roost up flags...] starts roost up in
# domain + TLS mode: https://api.DOMAIN and https://{port}-{id}.DOMAIN on
# ADDR, with roost's private CA (STACK_CA, made on the first start).
stack_start_domain() {
	local domain=$1 addr=$2 host port
	shift 2
	host="${addr%:*}" port="${addr##*:}"
	STACK_API="https://api.$domain"
	[[ "$port" == 443 ]] || STACK_API="$STACK_API:$port"
	stack_make_dir || return 1
	STACK_CA="$STACK_DATA/tls/$domain/ca.pem"
	STACK_CURL=(--cacert "$STACK_CA" --resolve "api.$domain:$port:$host")
	stack_launch "$addr" --domain "$domain" --tls "$@"
}

# stack_make_dir makes STACK_DIR and the data directory in it, once.
stack_make_dir() {
	[[ -z "$STACK_DIR" ]] || return 0
	mkdir -p "$STACK_CACHE/templates" &&
		STACK_DIR="$(mktemp -d "/var/tmp/roost-$STACK_NAME.XXXXXX")" &&
		STACK_DATA="$STACK_DIR/data" STACK_LOG="$STACK_DIR/roost.log" &&
		mkdir "$STACK_DATA" &&
		ln -s "$STACK_CACHE/templates" "$STACK_DATA/templates" || {
		STACK_ERROR="cannot make the data directory${STACK_DIR:+ in $STACK_DIR}"
		return 1
	}
}

# stack_launch starts roost up on ADDR with the flags and waits for it.
stack_launch() {
	local addr=$1 i
	shift
	stack_make_dir || return 1
	[[ -n "$STACK_KEY" ]] || STACK_KEY="$(stack_roost_key)"
	ROOST_API_KEY="$STACK_KEY" "$STACK_REPO/bin/roost" up --data-dir "$STACK_DATA" --listen "$addr" "$@" >"$STACK_LOG" 2>&1 &
	STACK_PID=$!
	for i in $(seq 300); do
		stack_healthy && return 0
		if ! kill -0 "$STACK_PID" 2>/dev/null; then
			STACK_ERROR="roost up exited"
			return 1
		fi
		sleep 0.1
	done
	STACK_ERROR="roost up did not answer $STACK_API/health within 30 s"
	return 1
}

# stack_healthy says whether roost up answers GET /health.
stack_healthy() {
	[[ -z "$STACK_CA" || -f "$STACK_CA" ]] &&
		curl -fs -o /dev/null -m 2 "${STACK_CURL[@]}" "$STACK_API/health"
}

# stack_api METHOD PATH calls the API with the stack's key and prints the body.
stack_api() {
	curl -fsS -m 30 "${STACK_CURL[@]}" -X "$1" -H "X-API-Key: $STACK_KEY" "$STACK_API$2"
}

# stack_kill_sandboxes destroys every sandbox of this roost up, running or
# paused, listing again until none is left (a page at a time).
stack_kill_sandboxes() {
	local round ids id
	for round in 1 2 3 4 5; do
		ids="$(stack_api GET '/v2/sandboxes?state=running,paused' |
			grep -o '"sandboxID": *"[^"]*"' | sed 's/.*"\([^"]*\)"$/\1/')" || return 0
		[[ -n "$ids" ]] || return 0
		for id in $ids; do
			stack_api DELETE "/sandboxes/$id" >/dev/null 2>&1 ||
				echo "test stack ($STACK_NAME): could not kill sandbox $id" >&2
		done
	done
	echo "test stack ($STACK_NAME): sandboxes remain after $round rounds of kills" >&2
}

# stack_stop kills the stack's sandboxes and stops roost up (TERM, then
# KILL after 10 s); STACK_DIR and the log stay for stack_end. Safe to
# call twice.
stack_stop() {
	local i
	[[ -n "$STACK_PID" ]] || return 0
	if kill -0 "$STACK_PID" 2>/dev/null; then
		stack_kill_sandboxes
		kill -TERM "$STACK_PID" 2>/dev/null || true
		for i in $(seq 100); do
			kill -0 "$STACK_PID" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$STACK_PID" 2>/dev/null || true
	fi
	wait "$STACK_PID" 2>/dev/null || true
	STACK_PID=""
	return 0
}

# stack_end RC LINES stops the stack, prints the last LINES lines of roost
# up's log when RC is not 0, and removes STACK_DIR: first it unmounts what
# the runtime left below it (a template's read-only lower layer, the layer
# of a sandbox whose kill failed), since removing through such a mount
# would reach the shared template cache. A directory that keeps a mount
# is left, saying so.
stack_end() {
	local rc=$1 lines=$2
	stack_stop
	[[ -n "$STACK_DIR" ]] || return 0
	if [[ "$rc" -ne 0 && -s "$STACK_LOG" ]]; then
		echo "----- roost up log (last $lines lines) -----" >&2
		tail -n "$lines" "$STACK_LOG" >&2
	fi
	if stack_unmount_below "$STACK_DIR"; then
		rm -rf --one-file-system "$STACK_DIR"
	else
		echo "test stack ($STACK_NAME): left $STACK_DIR: mounts remain below it" >&2
	fi
	STACK_DIR=""
	return 0
}

# stack_mounts_below lists the mount points below a directory, deepest first.
stack_mounts_below() {
	findmnt -rn -o TARGET | awk -v d="$1/" 'index($0, d) == 1' | sort -r
}

# stack_unmount_below unmounts everything below a directory; false if
# something stays.
stack_unmount_below() {
	local m
	for m in $(stack_mounts_below "$1"); do
		umount "$m" 2>/dev/null || umount --lazy "$m" || true
	done
	[[ -z "$(stack_mounts_below "$1")" ]]
}
