#!/bin/sh
# Freeze another revision of weft once, for `make bench BASELINE=<rev>` (bench.py --baseline).
#
#   bench/baseline.sh REV DEST        # builds REV into DEST/weft/weft unless it is there
#
# REV is checked out in a detached worktree under $TMPDIR and frozen by that revision's own
# packaging/build.sh with $PYTHON, so the baseline is what that revision shipped, not today's
# build recipe applied to old sources. DEST (dist/baseline/<full sha>) is only ever renamed
# into place complete: an interrupted build leaves no half bundle the next run would trust.
set -eu
[ $# -eq 2 ] || { echo "usage: bench/baseline.sh REV DEST" >&2; exit 2; }
rev=$1
dest=$2
if [ -x "$dest/weft/weft" ]; then
    echo "baseline: $dest/weft/weft (cached)"
    exit 0
fi
PYTHON=${PYTHON:-$(command -v python3)}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/weft-baseline.XXXXXX")
partial="$dest.partial.$$"
cleanup() {
    git worktree remove --force "$tmp/src" 2>/dev/null || true
    git worktree prune
    rm -rf "$tmp" "$partial"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM
git worktree add --quiet --detach "$tmp/src" "$rev"
mkdir -p "$(dirname "$dest")"
PYTHON="$PYTHON" DISTDIR="$partial" WORKDIR="$tmp/work" sh "$tmp/src/packaging/build.sh"
mv "$partial" "$dest"
echo "baseline: $dest/weft/weft ($rev)"
