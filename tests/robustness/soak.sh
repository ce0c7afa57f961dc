#!/bin/bash
# The fuzz soak (outside CI): N pytest workers side by side, each with its own sandbox node,
# random hypothesis seeds, WEFT_FUZZ_SCALE times the CI examples and its share of the
# wrong-type table; then the totals over all workers.
#
#   tests/robustness/soak.sh [WORKERS] [SCALE] [PYTEST -k EXPRESSION]
#   (root; WEFT_PLUGIN defaults to dist/weft/weft; nice'd: the machine stays usable)
set -u
workers=${1:-4}
scale=${2:-14}
select=${3:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${WEFT_SOAK_DIR:-/tmp/weft-soak}
rm -rf "$out" && mkdir -p "$out"
cd "$root"
export WEFT_PLUGIN=${WEFT_PLUGIN:-$root/dist/weft/weft}
pids=()
for i in $(seq 0 $((workers - 1))); do
    WEFT_SOAK=1 WEFT_FUZZ_SCALE=$scale WEFT_FUZZ_RANDOM=1 WEFT_FUZZ_WORKER=$i/$workers \
        nice -n 10 "${PYTHON:-python3}" -m pytest -q -p no:cacheprovider \
        --basetemp="$out/w$i" ${select:+-k "$select"} tests/robustness/test_fuzz.py \
        >"$out/w$i.log" 2>&1 &
    pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
"${PYTHON:-python3}" - "$out" <<'PY'
import json, pathlib, sys
total = {}
for f in sorted(pathlib.Path(sys.argv[1]).glob("w*/weft-robustness-figures.json")):
    for k, v in json.loads(f.read_text()).items():
        total[k] = total.get(k, 0) + v
for k in sorted(total):
    print(f"{k}: {total[k]}")
PY
grep -h -E "passed|failed" "$out"/w*.log
exit $rc
