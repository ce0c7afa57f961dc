#!/usr/bin/env bash
# Debian roots for the release: a minimal bullseye root per architecture (what a bare node
# has: the glibc every bundle must start on) and, derived from it, the build root that
# freezes weft there. Roots are cached under $WEFT_RELEASE_CACHE, keyed by what went into
# them, so a second `make release` reuses them.
#
#   roots.sh base ARCH     -> prints the path of the minimal root (bullseye, minbase)
#   roots.sh build ARCH    -> prints the path of the build root (base + build packages)
#
# Packages come from the Debian mirror this machine's apt already uses, read from its apt
# sources; no other host is contacted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=packaging/release/common.sh
. "$here/common.sh"

SUITE=bullseye
# What every root has beyond minbase: the bundle's runtime needs nothing, the tests' oracles
# run on the host, iptables is what weft execs for masquerading.
BASE_PKGS=iptables,ca-certificates
# The build root's extra packages, per architecture. amd64 also cross-compiles CPython for
# arm64 (native compilation under emulation is an order of magnitude slower).
BUILD_PKGS_amd64="build-essential pkg-config libffi-dev zlib1g-dev libssl-dev libsqlite3-dev
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross libffi-dev:arm64 zlib1g-dev:arm64
  libssl-dev:arm64 libsqlite3-dev:arm64 binutils"
# The arm64 build root only runs the cross-built CPython and PyInstaller (which strips with
# binutils and finds dependencies with ldd).
BUILD_PKGS_arm64="binutils libffi7 zlib1g libssl1.1 libsqlite3-0"

base_root() {
    local arch=$1 key dir
    key=$(key_of "debootstrap $(dpkg-query -W -f='${Version}' debootstrap)" \
        "$SUITE $arch minbase $BASE_PKGS")
    dir="$WEFT_RELEASE_CACHE/roots/$SUITE-$arch-base-$key"
    if [ ! -e "$dir/.complete" ]; then
        rm -rf "$dir" "$dir.tmp"
        [ "$arch" = "$(dpkg --print-architecture)" ] || ensure_binfmt "$arch"
        log "debootstrap $SUITE $arch (minbase) -> $dir"
        debootstrap --variant=minbase --arch="$arch" --include="$BASE_PKGS" \
            "$SUITE" "$dir.tmp" "$(debian_mirror)" >"$dir.log" 2>&1 ||
            { tail -20 "$dir.log" >&2; die "debootstrap $SUITE $arch failed (log: $dir.log)"; }
        configure_apt "$dir.tmp"
        touch "$dir.tmp/.complete"
        mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}

build_root() {
    local arch=$1 base key dir pkgs_var
    base=$(base_root "$arch")
    pkgs_var=BUILD_PKGS_$arch
    key=$(key_of "$(basename "$base")" "${!pkgs_var}")
    dir="$WEFT_RELEASE_CACHE/roots/$SUITE-$arch-build-$key"
    if [ ! -e "$dir/.complete" ]; then
        rm -rf "$dir" "$dir.tmp"
        log "build root $SUITE $arch -> $dir"
        cp -a "$base" "$dir.tmp"
        rm -f "$dir.tmp/.complete"
        case "${!pkgs_var}" in *:arm64*) in_root "$dir.tmp" dpkg --add-architecture arm64 ;; esac
        # shellcheck disable=SC2086
        in_root "$dir.tmp" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends ${!pkgs_var//$'\n'/ } && apt-get clean" \
            >"$dir.log" 2>&1 || { tail -20 "$dir.log" >&2; die "apt in $arch build root failed"; }
        touch "$dir.tmp/.complete"
        mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}

case "${1:-}" in
base) base_root "$2" ;;
build) build_root "$2" ;;
*) die "usage: roots.sh base|build ARCH" ;;
esac
