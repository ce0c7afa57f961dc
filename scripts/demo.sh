#!/usr/bin/env bash
# The demo: a sandbox k3s-style node (a network namespace) gets three pods networked by the
# frozen weft plugin, exactly as containerd would call it, then tears them down.
# Nothing outside the sandbox namespaces and a temp dir is touched.
set -euo pipefail
PLUGIN=${WEFT_PLUGIN:-$(pwd)/dist/weft/weft}
[ -x "$PLUGIN" ] || { echo "demo: $PLUGIN not built (run: make build)"; exit 1; }
id=$$
node=weft-demo-$id
tmp=$(mktemp -d /tmp/weft-demo.XXXXXX)
pods=()
cleanup() {
  for p in "${pods[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  ip netns del "$node" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

cat >"$tmp/subnet.env" <<EOT
FLANNEL_NETWORK=10.42.0.0/16
FLANNEL_SUBNET=10.42.7.1/24
FLANNEL_MTU=1450
FLANNEL_IPMASQ=true
EOT
conf=$(cat <<EOT
{"cniVersion":"1.0.0","name":"cbr0","type":"weft","subnetFile":"$tmp/subnet.env",
 "ipam":{"dataDir":"$tmp/networks"},
 "delegate":{"hairpinMode":true,"forceAddress":true,"isDefaultGateway":true}}
EOT
)
cni() {  # cni COMMAND CONTAINER_ID NETNS
  CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=$3 CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
    ip netns exec "$node" "$PLUGIN" <<<"$conf"
}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "sandbox node $node, flannel subnet file:"; cat "$tmp/subnet.env"
ip netns add "$node"; ip -n "$node" link set lo up
"$PLUGIN" --version
for i in 1 2 3; do
  p=$node-pod$i; pods+=("$p"); ip netns add "$p"
  say "ADD pod$i"
  start=$(date +%s%N); cni ADD "pod$i" "/run/netns/$p" | tee "$tmp/result$i.json"
  echo "(ADD took $(( ($(date +%s%N) - start) / 1000000 )) ms)"
done
say "pod1 as the kernel sees it"
ip -n "$node-pod1" -br addr show dev eth0; ip -n "$node-pod1" route
say "node: cni0 and its ports"
ip -n "$node" -br addr show dev cni0; ip -n "$node" -br link show master cni0
say "pod1 -> gateway, pod1 -> pod2, pod3 -> pod1"
ip netns exec "$node-pod1" ping -c1 -W2 10.42.7.1 | tail -2
ip netns exec "$node-pod1" ping -c1 -W2 10.42.7.3 | tail -2
ip netns exec "$node-pod3" ping -c1 -W2 10.42.7.2 | tail -2
say "CHECK pod1"
prev=$(cat "$tmp/result1.json")
CNI_COMMAND=CHECK CNI_CONTAINERID=pod1 CNI_NETNS="/run/netns/$node-pod1" CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
  ip netns exec "$node" "$PLUGIN" <<<"${conf%\}}, \"prevResult\": $prev}" && echo "CHECK ok"
say "store (host-local format): $tmp/networks/cbr0"
ls "$tmp/networks/cbr0"
say "DEL all pods (twice: DEL is idempotent)"
for i in 1 2 3; do cni DEL "pod$i" "/run/netns/$node-pod$i"; cni DEL "pod$i" "/run/netns/$node-pod$i"; done
left=$(find "$tmp/networks/cbr0" -maxdepth 1 -type f -name '10.*' | wc -l)
veths=$(ip -n "$node" -o link show type veth | wc -l)
echo "reservations left: $left, veths left: $veths"
[ "$left" -eq 0 ] && [ "$veths" -eq 0 ]
say "demo ok"
