#!/bin/sh
# Remove exactly what packaging/install.sh installed, as recorded in its manifest
# ($WEFT_LIB_DIR/.install-manifest). Same variables as install.sh (DESTDIR, PREFIX,
# CNI_BIN_DIR, WEFT_LIB_DIR; CNI_CONF_DIR is taken from the manifest).
#
# A conflist edited since install, or a weft symlink re-pointed elsewhere, is kept (with a
# message); directories install created are removed only when empty.
set -eu
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/cni}
CNI_BIN_DIR=${CNI_BIN_DIR:-$PREFIX/bin}
WEFT_LIB_DIR=${WEFT_LIB_DIR:-$CNI_BIN_DIR/weft.d}

manifest="$DESTDIR$WEFT_LIB_DIR/.install-manifest"
if [ ! -f "$manifest" ]; then
    echo "uninstall.sh: no manifest at $manifest: nothing installed there" >&2
    exit 0
fi
saved=$(mktemp)
trap 'rm -f "$saved"' EXIT
cp "$manifest" "$saved"

# >>> weft serve helper: stop and disable it before its units go ----------------------------
if [ -z "$DESTDIR" ] && grep -q '/weft\.socket$' "$saved" && [ -d /run/systemd/system ] \
    && command -v systemctl >/dev/null; then
    systemctl disable --now weft.socket weft.service 2>/dev/null || true
fi
# <<< weft serve helper ------------------------------------------------------------------

# files and links first, then the tree (which holds the manifest), then directories,
# innermost first (the manifest lists them outermost first)
while read -r kind a b; do
    case "$kind" in
    f)
        p="$DESTDIR$b"
        [ -e "$p" ] || continue
        if [ "$(sha256sum "$p" | cut -d' ' -f1)" = "$a" ]; then
            rm -f "$p"
        else
            echo "uninstall.sh: $p changed since install; kept" >&2
        fi
        ;;
    l)
        p="$DESTDIR$b"
        if [ -L "$p" ] && [ "$(readlink "$p")" = "$a" ]; then
            rm -f "$p"
        elif [ -e "$p" ] || [ -L "$p" ]; then
            echo "uninstall.sh: $p is no longer our symlink to $a; kept" >&2
        fi
        ;;
    esac
done <"$saved"
while read -r kind a _; do
    if [ "$kind" = t ]; then rm -rf "$DESTDIR$a"; fi
done <"$saved"
grep '^d ' "$saved" | sed -n '1!G;h;$p' | while read -r _ d; do
    rmdir "$DESTDIR$d" 2>/dev/null || true
done
# >>> weft serve helper ---------------------------------------------------------------------
if [ -z "$DESTDIR" ] && grep -q '/weft\.socket$' "$saved" && [ -d /run/systemd/system ] \
    && command -v systemctl >/dev/null; then
    systemctl daemon-reload || true
fi
# <<< weft serve helper ------------------------------------------------------------------
echo "uninstalled weft from ${DESTDIR:-/}"
