#!/bin/sh
# Install the frozen weft (dist/weft/, built by packaging/build.sh) and its conflist.
#
#   packaging/install.sh                                  # what `make install` runs
#   DESTDIR=/tmp/stage packaging/install.sh               # staged (packages, tests)
#
# Variables (all paths are final paths on the node; DESTDIR is prefixed to each and is
# created when missing). packaging/uninstall.sh takes the same ones:
#   PREFIX        /opt/cni                  base of the default CNI bin dir
#   CNI_BIN_DIR   $PREFIX/bin               where the runtime looks for plugins (k3s: see README)
#   CNI_CONF_DIR  /etc/cni/net.d            where 10-weft.conflist goes
#   WEFT_LIB_DIR  $CNI_BIN_DIR/weft.d       the onedir tree (bootloader weft + _internal/)
#   WEFT_DIST     <repo>/dist/weft          what to install
#   WEFT_NO_CONF  set to 1 to install the binary only
#   SYSTEMD_UNIT_DIR  /etc/systemd/system   where weft.socket + weft.service go (the helper)
#   WEFT_NO_UNITS set to 1 to install no systemd units
#
# A CNI_BIN_DIR under /var/lib/rancher/k3s/ must already exist and hold k3s's host-local:
# k3s creates its bin dir itself, so a missing one means a wrong path (or no k3s), and a
# directory made here would be one no runtime reads.
#
# Installs:
#   $WEFT_LIB_DIR/                 the whole onedir tree, replaced as a unit
#   $CNI_BIN_DIR/weft              symlink to $WEFT_LIB_DIR/weft: what the runtime execs
#                                  (relative when the lib dir is inside the bin dir)
#   $CNI_CONF_DIR/10-weft.conflist k3s's stock cbr0 conflist with weft first (install_owned_file)
#   $WEFT_LIB_DIR/.install-manifest  what was put where, for packaging/uninstall.sh:
#       t <path>            a tree we own (removed recursively)
#       l <target> <path>   a symlink (removed if it still points there)
#       f <sha256> <path>   a file we installed, with the checksum of what we installed
#                           (removed if unchanged, kept and reported if modified since)
#       d <path>            a directory install created (removed if empty)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/cni}
CNI_BIN_DIR=${CNI_BIN_DIR:-$PREFIX/bin}
CNI_CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}
WEFT_LIB_DIR=${WEFT_LIB_DIR:-$CNI_BIN_DIR/weft.d}
# what to install: the bundle beside this script in an unpacked release tarball, else the
# repo's `make build` output
if [ -z "${WEFT_DIST:-}" ] && [ -x "$here/weft/weft" ]; then WEFT_DIST=$here/weft; fi
WEFT_DIST=${WEFT_DIST:-$root/dist/weft}
SYSTEMD_UNIT_DIR=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
CONFLIST=10-weft.conflist
MAX_DEPTH=64 # directory levels mkdirs walks up at most (PATH_MAX / 2 ≈ 2048 would do too)

die() { echo "install.sh: $*" >&2; exit 1; }

check_paths() {
    case "$CNI_BIN_DIR$CNI_CONF_DIR$WEFT_LIB_DIR" in *"
"*) die "newlines in paths are not supported" ;; esac
    for _p in "$CNI_BIN_DIR" "$CNI_CONF_DIR" "$WEFT_LIB_DIR"; do
        case "$_p" in /*) ;; *) die "$_p: must be an absolute path" ;; esac
    done
    [ -x "$WEFT_DIST/weft" ] && [ -d "$WEFT_DIST/_internal" ] \
        || die "$WEFT_DIST is not a built onedir tree (run packaging/build.sh / make build)"
}

# A bundle runs only on the architecture it was built for: refuse another one before anything
# is installed (the build wrote its architecture into _internal/weft.build-id).
machine_arch() {
    case "$(uname -m)" in
    x86_64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) uname -m ;;
    esac
}

check_arch() {
    _id="$WEFT_DIST/_internal/weft.build-id"
    [ -f "$_id" ] || return 0
    _arch=$(tr ' ' '\n' <"$_id" | sed -n 's/^arch=//p')
    [ -n "$_arch" ] || return 0
    _machine=$(machine_arch)
    [ "$_arch" = "$_machine" ] ||
        die "this weft bundle is for linux/$_arch, this machine is linux/$_machine: install the linux-$_machine release"
}

# A k3s bin dir is k3s's to create (data/<hash>/bin, with data/current a link to it): refuse
# one that does not exist or does not hold host-local rather than make a dir nobody reads.
check_k3s_bin_dir() {
    case "$CNI_BIN_DIR/" in */var/lib/rancher/k3s/*) ;; *) return 0 ;; esac
    _bin="$DESTDIR$CNI_BIN_DIR"
    if [ ! -d "$_bin" ]; then
        die "$_bin does not exist: it is not a k3s bin dir on this node (k3s creates its own;
  no runtime would read weft there). Use the bin_dir of k3s's containerd (see
  /var/lib/rancher/k3s/agent/etc/containerd/config.toml), the one that holds host-local,
  as CNI_BIN_DIR."
    fi
    if [ ! -e "$_bin/host-local" ] && [ ! -L "$_bin/host-local" ]; then
        die "$_bin has no host-local: not the bin dir k3s's containerd uses (that one holds
  k3s's CNI plugins: host-local, portmap, bandwidth, ...). Use it as CNI_BIN_DIR."
    fi
}

# DESTDIR itself (a staging root; not recorded: uninstall leaves it)
make_destdir() {
    [ -z "$DESTDIR" ] || mkdir -p "$DESTDIR"
}

# mkdir -p, recording each directory we create (outermost first). The walk up stops at /
# (dirname / is /) and after MAX_DEPTH levels.
mkdirs() {
    _missing= _d=$1 _n=0
    while [ "$_d" != / ] && [ ! -d "$DESTDIR$_d" ] && [ "$_n" -lt "$MAX_DEPTH" ]; do
        _missing="$_d
$_missing"
        _d=$(dirname "$_d")
        _n=$((_n + 1))
    done
    [ "$_d" = / ] || [ -d "$DESTDIR$_d" ] || die "$1: more than $MAX_DEPTH missing levels"
    printf '%s' "$_missing" | while IFS= read -r _d; do
        [ -n "$_d" ] || continue
        mkdir -m 755 "$DESTDIR$_d"
        grep -qxF "d $_d" "$new_manifest" || echo "d $_d" >>"$new_manifest"
    done
}

# the checksum the previous install recorded for a file (empty: not ours)
installed_sum() {
    awk -v p="$1" '$1 == "f" && substr($0, length($1 $2) + 3) == p { print $2 }' "$old_manifest"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

# install_owned_file SRC FINAL_PATH: a file weft owns on the node.
#   missing, or as we installed it      -> (re)installed, recorded with the new checksum
#   installed by us, modified since     -> kept as the operator left it, reported, recorded
#                                          with the checksum we installed (so uninstall
#                                          knows it was modified and keeps it too)
#   there, not ours (and not identical) -> left alone, reported, not recorded
install_owned_file() {
    _src=$1 _path=$2
    _dst="$DESTDIR$_path"
    _sum=$(sha "$_src")
    _old=$(installed_sum "$_path")
    _cur=
    [ -e "$_dst" ] && _cur=$(sha "$_dst")
    if [ -z "$_cur" ] || [ "$_cur" = "$_sum" ] || { [ -n "$_old" ] && [ "$_cur" = "$_old" ]; }; then
        install -m 644 "$_src" "$_dst.tmp.$$"
        mv -f "$_dst.tmp.$$" "$_dst"
        echo "f $_sum $_path" >>"$new_manifest"
    elif [ -n "$_old" ]; then
        echo "install.sh: $_dst was modified since weft installed it; kept as it is" \
            "(weft's version: $_src)" >&2
        echo "f $_old $_path" >>"$new_manifest"
    else
        echo "install.sh: $_dst exists and was not installed by weft; left as is" >&2
    fi
}

# the onedir tree: copy beside, then swap (a runtime exec never sees a half-copied tree;
# only the instant between the two renames has no tree)
install_tree() {
    mkdirs "$(dirname "$WEFT_LIB_DIR")"
    _lib="$DESTDIR$WEFT_LIB_DIR"
    rm -rf "$_lib.new" "$_lib.old"
    cp -R "$WEFT_DIST" "$_lib.new"
    chmod -R u+rwX,go+rX,go-w "$_lib.new"
    if [ -e "$_lib" ]; then mv "$_lib" "$_lib.old"; fi
    mv "$_lib.new" "$_lib"
    rm -rf "$_lib.old"
    echo "t $WEFT_LIB_DIR" >>"$new_manifest"
}

# the entry point the runtime execs
install_entry_point() {
    mkdirs "$CNI_BIN_DIR"
    case "$WEFT_LIB_DIR" in
    "$CNI_BIN_DIR"/*) target=${WEFT_LIB_DIR#"$CNI_BIN_DIR"/}/weft ;;
    *) target=$WEFT_LIB_DIR/weft ;;
    esac
    ln -sfn "$target" "$DESTDIR$CNI_BIN_DIR/weft.tmp.$$"
    mv -f "$DESTDIR$CNI_BIN_DIR/weft.tmp.$$" "$DESTDIR$CNI_BIN_DIR/weft"
    echo "l $target $CNI_BIN_DIR/weft" >>"$new_manifest"
}

install_conflist() {
    if [ "${WEFT_NO_CONF:-0}" = 1 ]; then # not installing it now does not disown one we did
        _old=$(installed_sum "$CNI_CONF_DIR/$CONFLIST")
        [ -z "$_old" ] || echo "f $_old $CNI_CONF_DIR/$CONFLIST" >>"$new_manifest"
        return 0
    fi
    mkdirs "$CNI_CONF_DIR"
    install_owned_file "$here/$CONFLIST" "$CNI_CONF_DIR/$CONFLIST"
}

# >>> weft serve helper: systemd units (socket activation) -------------------------------
# weft.socket + weft.service with the lib dir filled in, owned like the conflist (an edited
# unit is kept and reported). Installed, not enabled: enabling the helper is the operator's
# choice (README: `systemctl enable --now weft.socket`).
install_units() {
    [ "${WEFT_NO_UNITS:-0}" != 1 ] || return 0
    case "$SYSTEMD_UNIT_DIR" in /*) ;; *) die "$SYSTEMD_UNIT_DIR: must be an absolute path" ;; esac
    mkdirs "$SYSTEMD_UNIT_DIR"
    for unit in weft.socket weft.service; do
        _rendered=$(mktemp)
        sed "s|@WEFT_LIB_DIR@|$WEFT_LIB_DIR|g" "$here/$unit" >"$_rendered"
        install_owned_file "$_rendered" "$SYSTEMD_UNIT_DIR/$unit"
        rm -f "$_rendered"
    done
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload || true
        # a running helper of the old build would refuse the new clients and exit on its
        # own; restart it now so that the new build serves at once
        if systemctl is-active --quiet weft.service; then systemctl restart weft.service || true; fi
    fi
}
# <<< weft serve helper ------------------------------------------------------------------

check_paths
check_arch
check_k3s_bin_dir
make_destdir

manifest="$DESTDIR$WEFT_LIB_DIR/.install-manifest"
old_manifest=$(mktemp) # install_tree replaces the tree that holds the manifest
new_manifest=$(mktemp)
trap 'rm -f "$old_manifest" "$new_manifest"' EXIT
if [ -f "$manifest" ]; then cp "$manifest" "$old_manifest"; fi
# directories an earlier install created stay "ours"
grep '^d ' "$old_manifest" >>"$new_manifest" || true

install_tree
install_entry_point
install_conflist
install_units
install -m 644 "$new_manifest" "$manifest"
echo "installed weft: $DESTDIR$CNI_BIN_DIR/weft -> $target"
