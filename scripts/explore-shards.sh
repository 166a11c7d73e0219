#!/usr/bin/env bash
# Prove sharding on this machine: record an exploration once, judge it as
# N shards through scripts/explore-shard.sh (exactly as the Kubernetes
# Indexed Job and the CI matrix do, one after the other here), merge them
# with `airboot report --merge`, judge it again unsharded from the same
# recording, and compare the two reports: every state's key, fingerprint
# and class, the classes and the tally must be equal.
#
#   bash scripts/explore-shards.sh [SCENARIO] [N] [airboot cut options...]
#   (default scenarios/explore-load-at-boot-x86_64.toml, 2 shards, --offline)
#
# Prints the figures and "merged == unsharded"; exits 1 when they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-scenarios/explore-load-at-boot-x86_64.toml}
n=${2:-2}
shift $(($# < 2 ? $# : 2))
opts=("$@")
[ ${#opts[@]} -gt 0 ] || opts=(--offline)
cargo build -q -p airboot
bin=./target/debug/airboot
work=$(mktemp -d -p "${TMPDIR:-/tmp}" airboot-shards-XXXXXX)
trap 'rm -rf "$work"' EXIT

"$bin" cut "$scenario" --record-only --report-dir "$work/rec" >"$work/rec.out" 2>&1
echo "recorded: $work/rec/record ($(du -h "$work/rec/record/writes.log" | cut -f1) of writes)"
for k in $(seq 1 "$n"); do
    SHARDS=$n JOB_COMPLETION_INDEX=$((k - 1)) AIRBOOT=$bin \
        bash scripts/explore-shard.sh "$scenario" "$work/rec/record" "$work/shards" "${opts[@]}" >"$work/shard-$k.out" 2>&1 || true
    echo "shard $k/$n: $(tail -1 "$work/shard-$k.out")"
done
"$bin" report --merge $(for k in $(seq 1 "$n"); do echo "$work/shards/shard-$k"; done) --report-dir "$work/merged" >"$work/merge.out" 2>&1 || true
echo "merged: $(tail -1 "$work/merge.out")"
"$bin" cut "$scenario" --recording "$work/rec/record" --report-dir "$work/whole" "${opts[@]}" >"$work/whole.out" 2>&1 || true
echo "unsharded: $(tail -1 "$work/whole.out")"
python3 - "$work/merged/report.json" "$work/whole/report.json" <<'PY'
import json, sys
def view(path):
    x = json.load(open(path))["exploration"]
    states = [(s["index"], s["key"], s.get("same_as"), s.get("fingerprint"), s.get("class")) for s in x["states"]]
    classes = [(c["fingerprint"], c["members"]) for c in x["classes"]]
    t = x["tally"]
    return states, classes, {k: t[k] for k in ("points", "enumerated", "judged_offline", "classes", "survived", "with_outcome", "first_bad") if k in t}
m, w = view(sys.argv[1]), view(sys.argv[2])
print(f"states {len(m[0])} vs {len(w[0])}, classes {len(m[1])} vs {len(w[1])}, tally {m[2]}")
if m == w:
    print("merged == unsharded")
else:
    for name, a, b in zip(("states", "classes", "tally"), m, w):
        if a != b:
            print(f"DIFFER in {name}")
    sys.exit(1)
PY
