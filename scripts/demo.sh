#!/usr/bin/env bash
# The demo: a sandbox k3s-style node (a network namespace) gets three pods networked by the
# frozen weft plugin, exactly as containerd would call it, then tears them down.
# Then the same pods again, each set up once in-process and once through a `weft serve`
# helper started in the sandbox node, with the time each took.
# Nothing outside the sandbox namespaces and a temp dir is touched.
set -euo pipefail
PLUGIN=${WEFT_PLUGIN:-$(pwd)/dist/weft/weft}
[ -x "$PLUGIN" ] || { echo "demo: $PLUGIN not built (run: make build)"; exit 1; }
id=$$
node=weft-demo-$id
tmp=$(mktemp -d /tmp/weft-demo.XXXXXX)
pods=()
helper=
cleanup() {
  [ -n "$helper" ] && kill "$helper" 2>/dev/null && wait "$helper" 2>/dev/null || true
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
sock=off  # where the plugin looks for the helper (off: always in-process)
cni() {  # cni COMMAND CONTAINER_ID NETNS
  WEFT_SOCKET=$sock CNI_COMMAND=$1 CNI_CONTAINERID=$2 CNI_NETNS=$3 CNI_IFNAME=eth0 CNI_PATH=/usr/lib/cni \
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

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
say "the helper: weft serve in the sandbox node (the same binary, pre-imported, forks per request)"
sock=$tmp/run/weft.sock
ip netns exec "$node" "$PLUGIN" serve --socket "$sock" 2>"$tmp/serve.log" &
helper=$!
for _ in $(seq 100); do grep -q "serving on" "$tmp/serve.log" 2>/dev/null && break; sleep 0.1; done
cat "$tmp/serve.log"
rows=()
for i in 1 2 3; do
  for mode in in-process helper; do
    if [ "$mode" = helper ]; then sock=$tmp/run/weft.sock; else sock=off; fi
    start=$(date +%s%N); cni ADD "pod$i" "/run/netns/$node-pod$i" >"$tmp/r.json"; add=$(ms_since "$start")
    addr=$(ip -n "$node-pod$i" -br addr show dev eth0 | awk '{print $3}')
    start=$(date +%s%N); cni DEL "pod$i" "/run/netns/$node-pod$i"; del=$(ms_since "$start")
    rows+=("$(printf '%-6s %-11s %-15s ADD %4s ms   DEL %4s ms' "pod$i" "$mode" "$addr" "$add" "$del")")
  done
done
say "the same pods, in-process and through the helper (wall time of each exec)"
printf '%s\n' "${rows[@]}"
say "what the helper logged (one line per request: command, container, exit code, time)"
grep "request " "$tmp/serve.log"
served=$(grep -c "request " "$tmp/serve.log" || true)
kill -TERM "$helper"; wait "$helper"; rc=$?; helper=
echo "helper stopped (exit $rc) after serving $served requests"
left=$(find "$tmp/networks/cbr0" -maxdepth 1 -type f -name '10.*' | wc -l)
veths=$(ip -n "$node" -o link show type veth | wc -l)
echo "reservations left: $left, veths left: $veths"
[ "$rc" -eq 0 ] && [ "$served" -eq 6 ] && [ "$left" -eq 0 ] && [ "$veths" -eq 0 ]
say "demo ok"
