# Shared by the release scripts (sourced, not run).
WEFT_RELEASE_CACHE=${WEFT_RELEASE_CACHE:-/var/cache/weft-release}
mkdir -p "$WEFT_RELEASE_CACHE/roots" "$WEFT_RELEASE_CACHE/python" "$WEFT_RELEASE_CACHE/wheels"

log() { printf 'release: %s\n' "$*" >&2; }
die() { printf 'release: %s\n' "$*" >&2; exit 1; }

# A short key for a cache entry: the sha256 of everything that went into it.
key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# The Debian mirror this machine's apt uses (deb822 or one-line sources), never a fixed host.
debian_mirror() {
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}')
    [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) {print $i; exit}}')
    [ -n "$uri" ] || die "no Debian mirror found in this machine's apt sources"
    echo "${uri%/}"
}

# apt inside a root: the mirror may serve a snapshot whose Release files are past their
# Valid-Until date, as this machine's own apt is configured to accept.
configure_apt() {
    local root=$1
    printf 'deb %s bullseye main\n' "$(debian_mirror)" >"$root/etc/apt/sources.list"
    printf 'Acquire::Check-Valid-Until "false";\nAcquire::Languages "none";\n' \
        >"$root/etc/apt/apt.conf.d/99weft-release"
}

# Foreign-architecture binaries run through qemu-user (binfmt_misc with the F flag, so they
# also run inside a chroot).
ensure_binfmt() {
    local arch=$1 qarch
    case "$arch" in arm64) qarch=aarch64 ;; *) die "no emulation set up for $arch" ;; esac
    [ -e /proc/sys/fs/binfmt_misc/register ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$qarch" ]; then
        command -v update-binfmts >/dev/null || die "install qemu-user-static and binfmt-support"
        update-binfmts --enable "qemu-$qarch" >/dev/null
    fi
}

# Run a command chrooted into ROOT, in a private mount namespace (the machine's mounts never
# change), with proc, sys, dev, the host's resolver and any `--bind HOSTDIR ROOTDIR` given
# before `--`. The environment is the root's own plus whatever `--env NAME=VALUE` adds.
in_root() {
    local root=$1; shift
    local binds=() envs=()
    while :; do
        case "${1:-}" in
        --bind) binds+=("$2" "$3"); shift 3 ;;
        --env) envs+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
        esac
    done
    cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    unshare --mount --propagation private -- bash -c '
        set -e
        root=$1 nb=$2; shift 2
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        while [ "$nb" -gt 0 ]; do
            mkdir -p "$root$2"; mount --bind "$1" "$root$2"; shift 2; nb=$((nb - 1))
        done
        ne=$1; shift
        envs=("${@:1:$ne}"); shift "$ne"
        exec chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            HOME=/root LANG=C.UTF-8 "${envs[@]}" "$@"' \
        bash "$root" $((${#binds[@]} / 2)) "${binds[@]}" "${#envs[@]}" "${envs[@]}" "$@"
}
