#!/bin/sh
# Install the frozen weft (dist/weft/, built by packaging/build.sh) and its conflist.
#
#   packaging/install.sh                                  # what `make install` runs
#   DESTDIR=/tmp/stage packaging/install.sh               # staged (packages, tests)
#
# Variables (all paths are final paths on the node; DESTDIR is prefixed to each):
#   PREFIX        /opt/cni                  base of the default CNI bin dir
#   CNI_BIN_DIR   $PREFIX/bin               where the runtime looks for plugins (k3s: see README)
#   CNI_CONF_DIR  /etc/cni/net.d            where 10-weft.conflist goes
#   WEFT_LIB_DIR  $CNI_BIN_DIR/weft.d       the onedir tree (bootloader weft + _internal/)
#   WEFT_DIST     <repo>/dist/weft          what to install
#   WEFT_NO_CONF  set to 1 to install the binary only
#   SYSTEMD_UNIT_DIR  /etc/systemd/system   where weft.socket + weft.service go (the helper)
#   WEFT_NO_UNITS set to 1 to install no systemd units
#
# Installs:
#   $WEFT_LIB_DIR/                 the whole onedir tree, replaced as a unit
#   $CNI_BIN_DIR/weft              symlink to $WEFT_LIB_DIR/weft: what the runtime execs
#                                  (relative when the lib dir is inside the bin dir)
#   $CNI_CONF_DIR/10-weft.conflist k3s's stock cbr0 conflist with weft first; an existing
#                                  one not installed by us is left alone (and not recorded)
#   $WEFT_LIB_DIR/.install-manifest  what was put where, for packaging/uninstall.sh:
#       t <path>            a tree we own (removed recursively)
#       l <target> <path>   a symlink (removed if it still points there)
#       f <sha256> <path>   a file (removed if unchanged)
#       d <path>            a directory install created (removed if empty)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/cni}
CNI_BIN_DIR=${CNI_BIN_DIR:-$PREFIX/bin}
CNI_CONF_DIR=${CNI_CONF_DIR:-/etc/cni/net.d}
WEFT_LIB_DIR=${WEFT_LIB_DIR:-$CNI_BIN_DIR/weft.d}
WEFT_DIST=${WEFT_DIST:-$root/dist/weft}
CONFLIST=10-weft.conflist

die() { echo "install.sh: $*" >&2; exit 1; }
case "$CNI_BIN_DIR$CNI_CONF_DIR$WEFT_LIB_DIR" in *"
"*) die "newlines in paths are not supported" ;; esac
for p in "$CNI_BIN_DIR" "$CNI_CONF_DIR" "$WEFT_LIB_DIR"; do
    case "$p" in /*) ;; *) die "$p: must be an absolute path" ;; esac
done
[ -x "$WEFT_DIST/weft" ] && [ -d "$WEFT_DIST/_internal" ] \
    || die "$WEFT_DIST is not a built onedir tree (run packaging/build.sh / make build)"

manifest="$DESTDIR$WEFT_LIB_DIR/.install-manifest"
new_manifest=$(mktemp)
trap 'rm -f "$new_manifest"' EXIT

# a previous install: remember which conflist was ours (same content -> we may replace it)
old_conf_sum=
if [ -f "$manifest" ]; then
    old_conf_sum=$(awk -v p="$CNI_CONF_DIR/$CONFLIST" '$1 == "f" && $3 == p { print $2 }' "$manifest")
    # directories an earlier install created stay "ours"
    grep '^d ' "$manifest" >>"$new_manifest" || true
fi

# mkdir -p, recording each directory we create (outermost first)
mkdirs() {
    _missing= _d=$1
    while [ ! -d "$DESTDIR$_d" ]; do
        _missing="$_d
$_missing"
        _d=$(dirname "$_d")
    done
    printf '%s' "$_missing" | while IFS= read -r _d; do
        [ -n "$_d" ] || continue
        mkdir -m 755 "$DESTDIR$_d"
        grep -qxF "d $_d" "$new_manifest" || echo "d $_d" >>"$new_manifest"
    done
}

mkdirs "$CNI_BIN_DIR"
mkdirs "$(dirname "$WEFT_LIB_DIR")"

# 1. the onedir tree: copy beside, then swap (a runtime exec never sees a half-copied tree;
#    only the instant between the two renames has no tree)
lib="$DESTDIR$WEFT_LIB_DIR"
rm -rf "$lib.new" "$lib.old"
cp -R "$WEFT_DIST" "$lib.new"
chmod -R u+rwX,go+rX,go-w "$lib.new"
if [ -e "$lib" ]; then mv "$lib" "$lib.old"; fi
mv "$lib.new" "$lib"
rm -rf "$lib.old"
echo "t $WEFT_LIB_DIR" >>"$new_manifest"

# 2. the entry point the runtime execs
case "$WEFT_LIB_DIR" in
"$CNI_BIN_DIR"/*) target=${WEFT_LIB_DIR#"$CNI_BIN_DIR"/}/weft ;;
*) target=$WEFT_LIB_DIR/weft ;;
esac
ln -sfn "$target" "$DESTDIR$CNI_BIN_DIR/weft.tmp.$$"
mv -f "$DESTDIR$CNI_BIN_DIR/weft.tmp.$$" "$DESTDIR$CNI_BIN_DIR/weft"
echo "l $target $CNI_BIN_DIR/weft" >>"$new_manifest"

# 3. the conflist
if [ "${WEFT_NO_CONF:-0}" != 1 ]; then
    mkdirs "$CNI_CONF_DIR"
    dst="$DESTDIR$CNI_CONF_DIR/$CONFLIST"
    sum=$(sha256sum "$here/$CONFLIST" | cut -d' ' -f1)
    cur=
    [ -e "$dst" ] && cur=$(sha256sum "$dst" | cut -d' ' -f1)
    if [ -z "$cur" ] || [ "$cur" = "$sum" ] || [ "$cur" = "$old_conf_sum" ]; then
        install -m 644 "$here/$CONFLIST" "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
        echo "f $sum $CNI_CONF_DIR/$CONFLIST" >>"$new_manifest"
    else
        echo "install.sh: $dst exists and was not installed by weft; left as is" >&2
    fi
fi

# >>> weft serve helper: systemd units (socket activation) -------------------------------
# weft.socket + weft.service, with the lib dir filled in; recorded as files ("f"), so
# uninstall.sh removes them when unchanged. Installed, not enabled: enabling the helper is
# the operator's choice (README: `systemctl enable --now weft.socket`).
if [ "${WEFT_NO_UNITS:-0}" != 1 ]; then
    SYSTEMD_UNIT_DIR=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
    case "$SYSTEMD_UNIT_DIR" in /*) ;; *) die "$SYSTEMD_UNIT_DIR: must be an absolute path" ;; esac
    mkdirs "$SYSTEMD_UNIT_DIR"
    for unit in weft.socket weft.service; do
        dst="$DESTDIR$SYSTEMD_UNIT_DIR/$unit"
        sed "s|@WEFT_LIB_DIR@|$WEFT_LIB_DIR|g" "$here/$unit" >"$dst.tmp.$$"
        chmod 644 "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
        echo "f $(sha256sum "$dst" | cut -d' ' -f1) $SYSTEMD_UNIT_DIR/$unit" >>"$new_manifest"
    done
    if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl daemon-reload || true
        # a running helper of the old build exits by itself on its next request; restart
        # it now so that the new build serves at once
        if systemctl is-active --quiet weft.service; then systemctl restart weft.service || true; fi
    fi
fi
# <<< weft serve helper ------------------------------------------------------------------

install -m 644 "$new_manifest" "$manifest"
echo "installed weft: $DESTDIR$CNI_BIN_DIR/weft -> $target"
