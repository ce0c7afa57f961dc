#!/usr/bin/env bash
# The CPython every release bundle freezes: 3.11 from Debian's source package, built in the
# bullseye build root, so its libpython and extension modules need nothing newer than that
# root's glibc. amd64 is built natively; arm64 is cross-compiled in the same amd64 root with
# bullseye's aarch64 cross toolchain and multiarch libraries, the amd64 build serving as the
# build Python. Each build, with the wheels PyInstaller needs installed into it, is cached
# under $WEFT_RELEASE_CACHE/python keyed by the source, this script and the wheel list.
#
#   python.sh ARCH   -> prints the directory to mount as /opt/weft-python in an ARCH root
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/common.sh"

PREFIX=/opt/weft-python
SRC_PACKAGE=python3.11
SRC_SUITE=bookworm
# The build's wheels: the plugin's one run-time dependency, the operator CLI's, PyInstaller.
WHEELS_FROM="$repo/packaging/release/requirements.txt"

# Debian's source package, fetched with a private apt state (the machine's own apt sources
# and lists are left as they are); only its upstream tarball is used.
python_source() {
    local dir="$WEFT_RELEASE_CACHE/src" state tarball
    state="$dir/apt"
    tarball=$(ls "$dir"/${SRC_PACKAGE}_*.orig.tar.* 2>/dev/null | head -1 || true)
    if [ -z "$tarball" ]; then
        mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
        printf 'deb-src %s %s main\n' "$(debian_mirror)" "$SRC_SUITE" >"$state/sources.list"
        local opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root)
        apt-get "${opts[@]}" update -qq >&2
        (cd "$dir" && apt-get "${opts[@]}" source --download-only -qq "$SRC_PACKAGE" >&2)
        tarball=$(ls "$dir"/${SRC_PACKAGE}_*.orig.tar.* | head -1)
    fi
    echo "$tarball"
}

# Wheels for the target's Python and architecture, downloaded on the host through its own pip
# configuration and installed offline in the root (the root has no pip configuration).
wheels() {
    local arch=$1 plat dir
    case "$arch" in amd64) plat=x86_64 ;; arm64) plat=aarch64 ;; esac
    dir="$WEFT_RELEASE_CACHE/wheels/$(key_of "$(cat "$WHEELS_FROM")" "$plat")-$arch"
    if [ ! -e "$dir/.complete" ]; then
        rm -rf "$dir"; mkdir -p "$dir"
        python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
            --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
            --platform "manylinux2014_$plat" --platform "manylinux_2_17_$plat" \
            --platform "manylinux_2_28_$plat" --platform any \
            -r "$WHEELS_FROM" -d "$dir" >"$dir.log" 2>&1 ||
            { cat "$dir.log" >&2; die "pip download for $arch failed"; }
        touch "$dir/.complete"
    fi
    echo "$dir"
}

# The shell script that configures, builds and installs CPython for ARCH inside the amd64
# build root (source in /w/src, build in /w/b, installed under /w/prefix). Its text is part of
# the cache key, so a change to one architecture's recipe rebuilds only that architecture.
recipe() {
    local arch=$1
    local configure="--prefix=$PREFIX --enable-shared LDFLAGS=-Wl,-rpath=$PREFIX/lib \
        --without-ensurepip --disable-test-modules"
    case "$arch" in
    amd64)
        echo "set -e; mkdir -p /w/b && cd /w/b
            /w/src/configure -q $configure >/w/configure.log 2>&1"
        ;;
    arm64)
        # the amd64 build, mounted at /opt/build-python, is the build Python; cache variables
        # answer what configure cannot run a target binary to find out
        echo "set -e; export LD_LIBRARY_PATH=/opt/build-python/lib
            export PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
            mkdir -p /w/b && cd /w/b
            /w/src/configure -q $configure --host=aarch64-linux-gnu --build=x86_64-linux-gnu \
                --with-build-python=/opt/build-python/bin/python3.11 \
                ac_cv_file__dev_ptmx=yes ac_cv_file__dev_ptc=no ac_cv_buggy_getaddrinfo=no \
                >/w/configure.log 2>&1"
        ;;
    esac
    echo "make -s -j$(nproc) >/w/make.log 2>&1
        make -s install DESTDIR=/w/prefix >/w/install.log 2>&1"
}

build_python() {
    local arch=$1 tarball buildroot key out work binds=()
    tarball=$(python_source)
    buildroot=$("$here/roots.sh" build amd64)
    key=$(key_of "$(sha256sum "$tarball")" "$(recipe "$arch")" "$(basename "$buildroot")")
    out="$WEFT_RELEASE_CACHE/python/cpython-$arch-$key"
    if [ -e "$out/.complete" ]; then echo "$out"; return; fi
    [ "$arch" = amd64 ] || binds=(--bind "$(build_python amd64)/prefix$PREFIX" /opt/build-python)
    rm -rf "$out.work"; mkdir -p "$out.work/src" "$out.work/prefix"
    work="$out.work"
    tar -C "$work/src" --strip-components=1 -xf "$tarball"
    log "CPython $(basename "$tarball") for $arch (in $(basename "$buildroot"))"
    in_root "$buildroot" --bind "$work" /w "${binds[@]}" -- bash -c "$(recipe "$arch")" ||
        die "CPython $arch build failed: see $work/*.log"
    touch "$work/.complete"
    mv "$work" "$out"
    echo "$out"
}

# The CPython with the release's wheels installed, run in a root of its own architecture
# (arm64 under emulation): what the bundle build mounts as $PREFIX.
python_env() {
    local arch=$1 cpython wheeldir root key out
    cpython=$(build_python "$arch")
    wheeldir=$(wheels "$arch")
    root=$("$here/roots.sh" build "$arch")
    key=$(key_of "$(basename "$cpython")" "$(basename "$wheeldir")" "$(basename "$root")")
    out="$WEFT_RELEASE_CACHE/python/env-$arch-$key"
    if [ ! -e "$out/.complete" ]; then
        rm -rf "$out" "$out.tmp"
        cp -a "$cpython/prefix$PREFIX" "$out.tmp"
        log "installing $(ls "$wheeldir" | grep -c whl) wheels into the $arch CPython"
        in_root "$root" --bind "$out.tmp" "$PREFIX" --bind "$wheeldir" /wheels \
            --bind "$here" /release -- sh -c "$PREFIX/bin/python3.11 \$(ls /wheels/pip-*.whl)/pip install \
            -q --no-index --find-links /wheels --no-warn-script-location --disable-pip-version-check \
            -r /release/requirements.txt" >"$out.log" 2>&1 ||
            { cat "$out.log" >&2; die "installing wheels into the $arch CPython failed"; }
        touch "$out.tmp/.complete"
        mv "$out.tmp" "$out"
    fi
    echo "$out"
}

case "${1:-}" in
amd64 | arm64) python_env "$1" ;;
*) die "usage: python.sh amd64|arm64" ;;
esac
