#!/usr/bin/env bash
# `make release`: the portable release of weft, one tarball per architecture.
#
#   packaging/release/release.sh [ARCH...]     (default: amd64 arm64)
#
# Each bundle is frozen inside a Debian bullseye root of its architecture (arm64 under
# qemu-user) with a CPython built for that root (python.sh), so nothing in it needs a glibc
# newer than bullseye's 2.31; the build fails when any ELF file in a bundle does
# (glibc_floor.py). Out: dist/release/weft-<version>-linux-<arch>.tar.gz and SHA256SUMS.
# Roots, CPython and wheels are cached under $WEFT_RELEASE_CACHE (python.sh, roots.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/common.sh"

GLIBC_FLOOR=2.31
PREFIX=/opt/weft-python
OUT=${WEFT_RELEASE_OUT:-$repo/dist/release}
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64)

version=$(python3 -S "$repo/packaging/project_version.py" "$repo")

# Freeze weft in ARCH's build root with ARCH's CPython; prints the onedir bundle's path.
bundle() {
    local arch=$1 root pyenv work
    root=$("$here/roots.sh" build "$arch")
    pyenv=$("$here/python.sh" "$arch")
    work="$OUT/work/$arch"
    rm -rf "$work"; mkdir -p "$work"
    log "freezing weft $version for $arch in $(basename "$root")"
    in_root "$root" --bind "$pyenv" "$PREFIX" --bind "$repo" /src --bind "$work" /out \
        --env "WEFT_RELEASE_ARCH=$arch" --env "WEFT_GLIBC_FLOOR=$GLIBC_FLOOR" -- \
        sh -c "PYTHON=$PREFIX/bin/python3.11 DISTDIR=/out/dist WORKDIR=/out/pyinstaller \
            /src/packaging/build.sh" >"$work/build.log" 2>&1 ||
        { tail -30 "$work/build.log" >&2; die "freezing weft for $arch failed (log: $work/build.log)"; }
    echo "$work/dist/weft"
}

# The tarball: one top directory with the bundle, the installer and what it installs.
package() {
    local arch=$1 dist=$2 name top
    name="weft-$version-linux-$arch"
    top="$OUT/work/$name"
    rm -rf "$top"; mkdir -p "$top"
    cp -a "$dist" "$top/weft"
    cp "$repo/packaging/install.sh" "$repo/packaging/uninstall.sh" "$top/"
    cp "$repo/packaging/10-weft.conflist" "$repo/packaging/weft.socket" \
        "$repo/packaging/weft.service" "$top/"
    sed -e "s/@VERSION@/$version/g" -e "s/@ARCH@/$arch/g" -e "s/@GLIBC_FLOOR@/$GLIBC_FLOOR/g" \
        "$here/README.release" >"$top/README"
    tar -C "$OUT/work" --owner=0 --group=0 --numeric-owner --sort=name -czf "$OUT/$name.tar.gz" "$name"
    echo "$OUT/$name.tar.gz"
}

mkdir -p "$OUT"
start=$SECONDS
tarballs=()
for arch in "${archs[@]}"; do
    case "$arch" in amd64 | arm64) ;; *) die "no release for $arch (amd64, arm64)" ;; esac
    dist=$(bundle "$arch")
    floor=$(python3 "$repo/packaging/glibc_floor.py" --max "$GLIBC_FLOOR" "$dist") ||
        die "the $arch bundle needs a glibc newer than $GLIBC_FLOOR"
    log "$arch bundle: highest GLIBC_ symbol version ${floor% *} (${floor#* })"
    tarballs+=("$(package "$arch" "$dist")")
done
(cd "$OUT" && sha256sum -- *.tar.gz >SHA256SUMS)
for t in "${tarballs[@]}"; do log "$(basename "$t"): $(du -h "$t" | cut -f1)"; done
log "release done in $((SECONDS - start)) s: $OUT"
