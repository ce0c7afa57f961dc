#!/bin/sh
# Freeze weft with PyInstaller into dist/weft/ (onedir: bootloader dist/weft/weft + _internal/).
#
#   packaging/build.sh                 # what `make build` runs
#   PYTHON=/path/to/python3 packaging/build.sh
#   DISTDIR=/tmp/x WORKDIR=/tmp/w packaging/build.sh   # elsewhere (tests, benchmarks)
#
# Variants for measurement only (see packaging/weft.spec): WEFT_ONEFILE=1, WEFT_NOARCHIVE=0,
# WEFT_OPTIMIZE=0|1|2, WEFT_NAME=...
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
PYTHON=${PYTHON:-$(command -v python3)}
[ -x "$PYTHON" ] || PYTHON=python3
DISTDIR=${DISTDIR:-$root/dist}
WORKDIR=${WORKDIR:-$root/build/pyinstaller}

"$PYTHON" -c 'import PyInstaller, pyroute2' 2>/dev/null || {
    echo "build.sh: $PYTHON needs PyInstaller>=6 and pyroute2 (pip install -e '.[dev]')" >&2
    exit 1
}
# PYTHONOPTIMIZE etc. from the caller's env would change the analysis; PYTHONDONTWRITEBYTECODE
# keeps the source tree clean.
env -u PYTHONOPTIMIZE PYTHONDONTWRITEBYTECODE=1 "$PYTHON" -m PyInstaller \
    --noconfirm --clean --log-level "${PYI_LOG_LEVEL:-WARN}" \
    --distpath "$DISTDIR" --workpath "$WORKDIR" \
    "$here/weft.spec"

name=${WEFT_NAME:-weft}
if [ "${WEFT_ONEFILE:-0}" = 1 ]; then
    out="$DISTDIR/$name"
else
    out="$DISTDIR/$name/$name"
    # The build identity a `weft serve` helper and its clients compare (cni/helper/client.py), and
    # what `weft --version` shows: the version, a digest of every file of the bundle, the
    # architecture, the oldest glibc the bundle starts on (the highest GLIBC_ symbol version
    # any of its ELF files needs) and whether it is a release build (packaging/release/) or a
    # development build on this machine.
    version=$("$PYTHON" -S "$here/project_version.py" "$root")
    digest=$(cd "$DISTDIR/$name" && find . -type f ! -name weft.build-id -print0 | LC_ALL=C sort -z |
        xargs -0 sha256sum | sha256sum | cut -c1-40)
    case "${WEFT_RELEASE_ARCH:-$(uname -m)}" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
    esac
    glibc=$("$PYTHON" -S "$here/glibc_floor.py" "$DISTDIR/$name") || {
        echo "build.sh: could not read the bundle's glibc floor (is readelf installed?)" >&2
        exit 1
    }
    kind=dev
    [ -z "${WEFT_RELEASE_ARCH:-}" ] || kind=release
    printf 'weft %s %s arch=%s glibc=%s build=%s\n' "$version" "$digest" "$arch" "${glibc%% *}" \
        "$kind" >"$DISTDIR/$name/_internal/weft.build-id"
fi
# smoke: the frozen binary must answer VERSION (no network, no env beyond CNI_COMMAND)
v=$(env -i CNI_COMMAND=VERSION "$out" </dev/null)
case "$v" in
*supportedVersions*) ;;
*) echo "build.sh: frozen $out did not answer VERSION: $v" >&2; exit 1 ;;
esac
echo "built $out"
