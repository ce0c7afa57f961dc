#!/usr/bin/env bash
# Install every apt and pip dependency of the build, the tests, the demo and the benchmark.
# Idempotent and quick when everything is already there. Run as root (CI is root).
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PKGS=(iproute2 iptables iputils-ping procps util-linux e2fsprogs gcc libc6-dev make containerd runc
          containernetworking-plugins busybox-static golang-go golang-github-appc-cni-dev kmod
          binutils debootstrap qemu-user-static binfmt-support)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
if ! "$PY" -m pip install -q --disable-pip-version-check -r requirements-dev.txt >/tmp/weft-pip.log 2>&1; then
  cat /tmp/weft-pip.log; exit 1
fi
echo "deps: ok"
