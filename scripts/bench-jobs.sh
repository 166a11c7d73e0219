#!/usr/bin/env bash
# Benchmark: throughput of `airboot run --jobs` on this host.
#
#   bash scripts/bench-jobs.sh [RUNS] [ROUNDS] [SCENARIO] [CPUS]
#   (default 4 runs, 2 rounds, scenarios/preseeded-x86_64.toml, the
#   scenario's own cpus; CPUS sets [machine] cpus in a copy)
#
# Each round runs `airboot run SCENARIO --repeat RUNS` with --jobs 1, then
# with --jobs 2 (alternating, so a noisy neighbour hits both). Per run of
# airboot: its wall time, the boots per hour that makes, the median time to
# running stack of its boots (the guest's clocks: how much each guest
# slowed beside another) and how many passed. Then per --jobs the median
# with min and max over the rounds, and the throughput ratio jobs 2 / jobs 1
# of each round.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-4}
rounds=${2:-2}
scenario=${3:-scenarios/preseeded-x86_64.toml}
cpus=${4:-}
cargo build -q --release -p airboot
bin=$PWD/target/release/airboot
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
work=$(mktemp -d /var/tmp/airboot-bench-jobs.XXXXXX)
copy=""
trap 'rm -rf "$work" $copy' EXIT
if [ -n "$cpus" ]; then
    copy="$(dirname "$scenario")/.bench-jobs-$$.toml"
    scenario_variant "$scenario" cpus "$cpus" "$copy"
    scenario=$copy
fi
echo "$runs boots of $scenario per run${cpus:+, cpus = $cpus}"
printf '%-6s %5s %9s %11s %14s %7s\n' round jobs "wall(s)" "boots/hour" "stack median" passed
declare -A per
ratios=""
for r in $(seq 1 "$rounds"); do
    one=""
    for j in 1 2; do
        dir="$work/$r-$j"
        start=$(date +%s.%N)
        "$bin" run "$scenario" --repeat "$runs" --jobs "$j" --report-dir "$dir" >/dev/null 2>"$dir.err" || true
        wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
        read -r stack passed < <(python3 - "$dir" <<'PY'
import glob, json, sys
t, ok = [], 0
for f in glob.glob(sys.argv[1] + "/*/run-*/report.json"):
    r = json.load(open(f))
    ok += r.get("verdict") == "pass"
    if r.get("time_to_stack_s") is not None:
        t.append(r["time_to_stack_s"])
t.sort()
m = (t[len(t) // 2] if len(t) % 2 else (t[len(t) // 2 - 1] + t[len(t) // 2]) / 2) if t else float("nan")
print("%.1f" % m, ok)
PY
)
        bph=$(fig "$(awk -v n="$runs" -v w="$wall" 'BEGIN { print 3600 * n / w }')")
        printf '%-6s %5s %9s %11s %13ss %4s/%s\n' "$r" "$j" "$wall" "$bph" "$stack" "$passed" "$runs"
        per[$j]="${per[$j]:-} $bph"
        per[s$j]="${per[s$j]:-} $stack"
        if [ "$j" = 1 ]; then one=$bph; else ratios="$ratios $(fig "$(awk -v a="$bph" -v b="$one" 'BEGIN { print a / b }')")"; fi
    done
done
echo
for j in 1 2; do
    echo "--jobs $j: boots per hour $(stats "${per[$j]}"); time to stack per boot $(stats "${per[s$j]}") s"
done
echo "throughput jobs 2 / jobs 1: $(stats "$ratios")"
