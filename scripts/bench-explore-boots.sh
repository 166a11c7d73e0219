#!/usr/bin/env bash
# Benchmark: how many crash states an exploration powers on per hour at
# 1, 2 and 4 boots at once (`airboot cut --jobs N`).
#
#   bash scripts/bench-explore-boots.sh [SCENARIO] [SHARD] [ROUNDS] [SAMPLE] [CPUS]
#   (default scenarios/explore-load-at-boot-x86_64.toml, shard 6/6,
#   3 rounds, sample 0, the scenario's [machine] cpus)
#
# Under TCG a guest keeps about one host core busy per vCPU: on a host
# with 2 cores, two 2-vCPU guests at once gain little. CPUS sets the
# guests' vCPUs (recorded and powered on alike) to see that.
#
# One boot is recorded (`--record-only`), then each round judges the same
# slice of its states (`--recording R --shard SHARD`) three times, one
# after the other: --jobs 1, --jobs 2, --jobs 4. Every run powers on the
# same states (one per class, plus SAMPLE sampled members per class). Per
# run: the boots, their wall time (report.json `exploration.boot_s`: the
# power-on phase only, not the offline judging), boots per hour, and the
# speedup over --jobs 1 in the same round. Then the median, min and max
# of each figure over the rounds. Column `same` says whether the run gave
# every state the outcome the round's --jobs 1 run gave it.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-scenarios/explore-load-at-boot-x86_64.toml}
shard=${2:-6/6}
rounds=${3:-3}
sample=${4:-0}
cpus=${5:-}
cargo build -q --release -p airboot
bin=./target/release/airboot
work=$(mktemp -d)
copy="$(dirname "$scenario")/.bench-explore-boots-$$.toml"
trap 'rm -rf "$work" "$copy"' EXIT
sed -e "s|^sample *=.*|sample = $sample|" "$scenario" >"$copy"
grep -q '^sample' "$copy" || sed -i "/^\[power_cut\]/a sample = $sample" "$copy"
if [ -n "$cpus" ]; then
    sed -i -e '/^cpus *=/d' -e "/^\[machine\]/a cpus = $cpus" "$copy"
fi

echo "recording one boot of $scenario ..."
"$bin" cut "$copy" --record-only --report-dir "$work/rec" >"$work/rec.out" 2>&1 ||
    { tail -20 "$work/rec.out"; exit 2; }

field() { python3 -c "import json,sys; x=json.load(open(sys.argv[1]))['exploration']; print($2)" "$1"; }
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

printf '%-5s %-4s %6s %9s %10s %8s %5s\n' round jobs boots boot_s boots/h speedup same
declare -A series
for r in $(seq 1 "$rounds"); do
    base=""
    for j in 1 2 4; do
        dir="$work/$r-j$j"
        "$bin" cut "$copy" --recording "$work/rec/record" --shard "$shard" --jobs "$j" --report-dir "$dir" \
            >"$dir.out" 2>&1 || true
        [ -f "$dir/report.json" ] || { tail -20 "$dir.out"; exit 2; }
        n=$(field "$dir/report.json" "x['tally']['powered_on']")
        s=$(field "$dir/report.json" "x['boot_s']")
        got=$(field "$dir/report.json" "x['boot_jobs']")
        outcomes=$(field "$dir/report.json" "[s.get('outcome') for s in x['states']]")
        [ "$got" = "$j" ] || { echo "asked --jobs $j, booted $got at once"; exit 2; }
        rate=$(awk -v n="$n" -v s="$s" 'BEGIN { print n * 3600 / s }')
        if [ "$j" = 1 ]; then base=$s first="$outcomes"; fi
        same=yes
        [ "$outcomes" = "$first" ] || same=NO
        speed=$(awk -v b="$base" -v s="$s" 'BEGIN { print b / s }')
        printf '%-5s %-4s %6s %9s %10s %8s %5s\n' "$r" "$j" "$n" "$(fig "$s")" "$(fig "$rate")" "$(fig "$speed")" "$same"
        series[j$j-rate]+="$rate " series[j$j-speed]+="$speed "
    done
done

echo
for j in 1 2 4; do
    echo "--jobs $j boots per hour ........... $(stats "${series[j$j-rate]}")"
done
for j in 2 4; do
    echo "--jobs $j speedup over --jobs 1 .... $(stats "${series[j$j-speed]}") x"
done
