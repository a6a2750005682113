#!/usr/bin/env bash
# Installs what building and testing roost needs on Debian/Ubuntu, and
# nothing that is already there. Safe to run repeatedly. Needs root.
set -euo pipefail

GO_VERSION=1.26.8
# command → the Debian package that provides it. Commands are checked, not
# packages: a machine may have them from elsewhere (Node.js often is).
declare -A want=(
  [make]=make [gcc]=gcc [git]=git [curl]=curl [ip]=iproute2 [ps]=procps
  [unshare]=util-linux [mkfs.ext4]=e2fsprogs [debootstrap]=debootstrap
  [node]=nodejs [npm]=npm
  # The qemu runtime: the emulator, overlays, image building, kernel extraction.
  [qemu-system-x86_64]=qemu-system-x86 [qemu-img]=qemu-utils [debugfs]=e2fsprogs [xz]=xz-utils
  # The firecracker runtime's tests: sandbox disks are reflinks, made on an XFS loop mount.
  [mkfs.xfs]=xfsprogs
  # Browser tests: the attack suite loads sandbox pages in headless Chromium.
  [chromium]=chromium
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# The code interpreter's kernels: Debian's Jupyter kernel for Python, with
# the libraries E2B's code-interpreter template offers.
for mod in ipykernel:python3-ipykernel matplotlib:python3-matplotlib pandas:python3-pandas numpy:python3-numpy scipy:python3-scipy; do
  /usr/bin/python3 -c "import ${mod%%:*}" 2>/dev/null || missing+=("${mod#*:}")
done
/usr/bin/R --slave -e 'library(IRkernel)' >/dev/null 2>&1 || missing+=(r-cran-irkernel)
# JavaScript and TypeScript kernels: Node.js with Debian's acorn and
# typescript modules; Java kernels: a JDK's JShell.
for mod in acorn:node-acorn typescript:node-typescript; do
  [ -e "/usr/share/nodejs/${mod%%:*}" ] || missing+=("${mod#*:}")
done
command -v jshell >/dev/null 2>&1 || missing+=(default-jdk-headless)
# The qemu runtime boots Debian's kernel package (vmlinuz + modules).
compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Go: roost needs $GO_VERSION or newer. Distributions ship older ones, so
# when it is missing, bootstrap with the distribution's Go and let it fetch
# the toolchain module from the Go module proxy.
have_go() {
  command -v go >/dev/null 2>&1 || return 1
  local v; v=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [ "$(printf '%s\n%s\n' "$GO_VERSION" "$v" | sort -V | head -n1)" = "$GO_VERSION" ]
}
export PATH=/usr/local/go/bin:$PATH
if ! have_go; then
  echo "deps: installing Go $GO_VERSION"
  command -v go >/dev/null 2>&1 || { apt-get update -q; apt-get install -y -q --no-install-recommends golang-go; }
  mod="golang.org/toolchain@v0.0.1-go${GO_VERSION}.linux-$(dpkg --print-architecture)"
  dir=$(cd /tmp && GOFLAGS=-modcacherw go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || { echo "deps: could not download $mod" >&2; exit 1; }
  rm -rf /usr/local/go && cp -a "$dir" /usr/local/go
  chmod -R a+rX /usr/local/go
  chmod a+x /usr/local/go/bin/* /usr/local/go/pkg/tool/*/*
  have_go || { echo "deps: Go $GO_VERSION still not usable" >&2; exit 1; }
fi
bash "$(dirname "$0")/criu.sh" || echo "deps: no working CRIU; namespace sandboxes pause with the freezer only" >&2
echo "deps: ok ($(go version))"
