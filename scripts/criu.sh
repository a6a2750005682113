#!/usr/bin/env bash
# Installs CRIU for the namespace runtime's hibernation: the distribution's
# criu when it works on this kernel, else CRIU from Debian unstable in a
# tree of its own (/usr/local/lib/roost/criu) with a wrapper,
# /usr/local/lib/roost/criu/criu, that runs it with the tree's libraries.
# Why unstable: Debian 12's criu 3.17 fails `criu check` on kernels >= 6.15
# (vvar_vclock), and trixie's 4.1 cannot dump a TCP socket on kernels
# >= 6.16 (SO_PASSCRED); 4.2 can. The driver finds the wrapper by itself
# (namespace.DefaultCRIU). Safe to run repeatedly. Needs root. Without
# CRIU, roost runs and pauses sandboxes with the freezer only.
set -euo pipefail

DIR=${ROOST_CRIU_DIR:-/usr/local/lib/roost/criu}
SUITE=${ROOST_CRIU_SUITE:-sid}
MIRROR=${ROOST_CRIU_MIRROR:-http://deb.debian.org/debian}

# usable: `criu check` passes, and on kernels >= 6.16 it is CRIU >= 4.2.
usable() {
  "$1" check >/dev/null 2>&1 || return 1
  local k v
  k=$(uname -r | cut -d. -f1,2)
  v=$("$1" --version | sed -n 's/^Version: \([0-9]*\.[0-9]*\).*/\1/p')
  [ "$(printf '%s\n6.16\n' "$k" | sort -V | head -n1)" = 6.16 ] || return 0
  [ "$(printf '%s\n4.2\n' "$v" | sort -V | head -n1)" = 4.2 ]
}

if command -v criu >/dev/null 2>&1 && usable "$(command -v criu)"; then
  echo "criu: ok (the host's $(command -v criu))"
  exit 0
fi
if [ -x "$DIR/criu" ] && usable "$DIR/criu"; then
  echo "criu: ok ($DIR/criu)"
  exit 0
fi
case "$(uname -m)" in
  x86_64) ld=lib64/ld-linux-x86-64.so.2 libs=usr/lib/x86_64-linux-gnu ;;
  aarch64) ld=lib/ld-linux-aarch64.so.1 libs=usr/lib/aarch64-linux-gnu ;;
  *) echo "criu: no recipe for $(uname -m); hibernation falls back to the freezer" >&2; exit 0 ;;
esac
command -v debootstrap >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v debootstrap >/dev/null 2>&1 || {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q && apt-get install -y -q --no-install-recommends debootstrap
}
echo "criu: installing CRIU from Debian $SUITE into $DIR"
mkdir -p "$(dirname "$DIR")"
tmp=$(mktemp -d "$(dirname "$DIR")/.criu.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
PATH=$PATH:/usr/sbin:/sbin debootstrap --variant=minbase --include=criu "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/log" 2>&1 ||
  { tail -20 "$tmp/log" >&2; exit 1; }
# What CRIU needs of the tree is its binary and libraries: drop the rest.
rm -rf "$tmp/root/var/cache/apt" "$tmp/root/var/lib/apt/lists" "$tmp/root/usr/share/doc" "$tmp/root/usr/share/man" "$tmp/root/usr/share/locale"
cat >"$tmp/criu" <<WRAP
#!/bin/sh
# CRIU from Debian $SUITE, run with its own libraries (scripts/criu.sh).
R=$DIR/root
exec "\$R/$ld" --library-path "\$R/$libs:\$R/lib/$(basename $libs)" "\$R/usr/sbin/criu" "\$@"
WRAP
chmod 755 "$tmp/criu"
rm -rf "$DIR.old"
[ -e "$DIR" ] && mv "$DIR" "$DIR.old"
mv "$tmp" "$DIR"
trap - EXIT
rm -rf "$DIR.old"
chmod 755 "$DIR"
rm -f "$DIR/log"
if usable "$DIR/criu"; then
  echo "criu: ok ($DIR/criu)"
else
  echo "criu: installed $DIR/criu, but \`criu check\` fails on this host:" >&2
  "$DIR/criu" check >&2 || true
  exit 1
fi
