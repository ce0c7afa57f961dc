#!/bin/sh
# Remove exactly what packaging/install.sh installed, as recorded in its manifest
# ($WEFT_LIB_DIR/.install-manifest). Takes the same variables as install.sh (DESTDIR,
# PREFIX, CNI_BIN_DIR, WEFT_LIB_DIR; CNI_CONF_DIR is taken from the manifest): give it the
# ones the install was given.
#
# A file weft installed and someone modified since (the conflist) is kept, with a message
# naming it: it holds an operator's edits, which are not ours to delete. A weft symlink
# re-pointed elsewhere is kept too; directories install created are removed only when empty.
#
# Exit status: 0 when it removed an install; 1 when there is no manifest where the
# variables point (nothing removed), with the paths it looked at and, when the entry point
# it finds there tells, the variables that point at the install.
set -eu
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/cni}
CNI_BIN_DIR=${CNI_BIN_DIR:-$PREFIX/bin}
WEFT_LIB_DIR=${WEFT_LIB_DIR:-$CNI_BIN_DIR/weft.d}

manifest="$DESTDIR$WEFT_LIB_DIR/.install-manifest"

# where an entry point at $CNI_BIN_DIR/weft says the tree is (empty if none / not weft's)
lib_dir_of_entry_point() {
    _link="$DESTDIR$CNI_BIN_DIR/weft"
    [ -L "$_link" ] || return 0
    _t=$(readlink "$_link")
    case "$_t" in
    */weft) ;;
    *) return 0 ;;
    esac
    _lib=${_t%/weft}
    case "$_lib" in /*) ;; *) _lib="$CNI_BIN_DIR/$_lib" ;; esac
    if [ -f "$DESTDIR$_lib/.install-manifest" ]; then echo "$_lib"; fi
}

no_manifest() {
    {
        echo "uninstall.sh: no install manifest at $manifest: nothing removed."
        echo "  looked there because DESTDIR=${DESTDIR:-(empty)} CNI_BIN_DIR=$CNI_BIN_DIR" \
            "WEFT_LIB_DIR=$WEFT_LIB_DIR (PREFIX=$PREFIX)"
        _found=$(lib_dir_of_entry_point)
        echo "  uninstall takes the same variables as the install: give it the DESTDIR," \
            "CNI_BIN_DIR and WEFT_LIB_DIR that make install was given (the manifest is" \
            "\$WEFT_LIB_DIR/.install-manifest)."
        if [ -n "$_found" ]; then
            echo "  $DESTDIR$CNI_BIN_DIR/weft points at an install in $_found: run again with" \
                "WEFT_LIB_DIR=$_found"
        fi
    } >&2
    exit 1
}

# files and links first, then the tree (which holds the manifest), then directories,
# innermost first (the manifest lists them outermost first)
remove_files_and_links() {
    while read -r _kind _a _b; do
        case "$_kind" in
        f)
            _p="$DESTDIR$_b"
            [ -e "$_p" ] || continue
            if [ "$(sha256sum "$_p" | cut -d' ' -f1)" = "$_a" ]; then
                rm -f "$_p"
            else
                echo "uninstall.sh: $_p was modified since weft installed it; kept" \
                    "(remove it yourself if it is no longer wanted)" >&2
            fi
            ;;
        l)
            _p="$DESTDIR$_b"
            if [ -L "$_p" ] && [ "$(readlink "$_p")" = "$_a" ]; then
                rm -f "$_p"
            elif [ -e "$_p" ] || [ -L "$_p" ]; then
                echo "uninstall.sh: $_p is no longer our symlink to $_a; kept" >&2
            fi
            ;;
        esac
    done <"$saved"
}

remove_trees() {
    while read -r _kind _a _; do
        if [ "$_kind" = t ]; then rm -rf "$DESTDIR$_a"; fi
    done <"$saved"
}

remove_empty_dirs() {
    grep '^d ' "$saved" | sed -n '1!G;h;$p' | while read -r _ _d; do
        rmdir "$DESTDIR$_d" 2>/dev/null || true
    done
}

[ -f "$manifest" ] || no_manifest
saved=$(mktemp)
trap 'rm -f "$saved"' EXIT
cp "$manifest" "$saved"

# >>> weft serve helper: stop and disable it before its units go ----------------------------
# (the same test as install.sh's: systemd is this machine's init and answers)
helper_units_installed() {
    [ -z "$DESTDIR" ] && grep -q '/weft\.socket$' "$saved" && [ -d /run/systemd/system ] &&
        command -v systemctl >/dev/null && systemctl show-environment >/dev/null 2>&1
}
if helper_units_installed; then
    # the socket first: stopping the service alone would let the next pod start it again
    systemctl disable --now --quiet weft.socket weft.service ||
        echo "uninstall.sh: systemctl disable --now weft.socket weft.service failed" >&2
    systemctl stop weft.socket weft.service ||
        echo "uninstall.sh: systemctl stop weft.socket weft.service failed" >&2
    echo "weft helper: weft.socket and weft.service stopped and disabled"
fi
# <<< weft serve helper ------------------------------------------------------------------

remove_files_and_links
remove_trees
remove_empty_dirs
# >>> weft serve helper ---------------------------------------------------------------------
if helper_units_installed; then systemctl daemon-reload || true; fi
# <<< weft serve helper ------------------------------------------------------------------
echo "uninstalled weft from ${DESTDIR:-/}"
