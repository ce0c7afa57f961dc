#!/bin/sh
# Build conformance/driver/bin/cnidriver offline with Debian's golang-go (1.19) and
# golang-github-appc-cni-dev (libcni 1.1.2 under /usr/share/gocode), GOPATH mode, no network.
#   build.sh [OUTPUT [PERSONALITY]]   PERSONALITY cnitool builds the same source as a cnitool
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/bin/cnidriver"}
personality=${2:-cnidriver}
gopath=$(mktemp -d "${TMPDIR:-/tmp}/wc-gopath.XXXXXX")
trap 'rm -rf "$gopath"' EXIT INT TERM
mkdir -p "$gopath/src/weft/cnidriver" "$(dirname "$out")"
case $out in /*) ;; *) out="$PWD/$out" ;; esac
cp "$here/main.go" "$gopath/src/weft/cnidriver/"
cd "$gopath/src/weft/cnidriver"
GOPATH="$gopath:/usr/share/gocode" GO111MODULE=off GOPROXY=off \
	GOCACHE="${GOCACHE:-$gopath/cache}" CGO_ENABLED=0 \
	go build -ldflags "-X main.personality=$personality" -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "built $out"
