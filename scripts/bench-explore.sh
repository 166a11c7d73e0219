#!/usr/bin/env bash
# Benchmark: how fast an exploration (`[power_cut] points = "all"`) judges
# crash states offline, against judging them one by one as a plain sweep
# does (a qcow2 per state, a full copy of the root filesystem, e2fsck,
# the store read).
#
#   bash scripts/bench-explore.sh [SCENARIO] [ROUNDS]
#   (default scenarios/explore-load-at-boot-x86_64.toml, 3 rounds)
#
# Each round runs, one after the other (each records its own boot):
#   j1       airboot cut SCENARIO --offline --jobs 1
#   j2       airboot cut SCENARIO --offline --jobs 2
#   classic  the same scenario as an 8-point sweep (`points = 8`,
#            lose-unflushed), --offline: seconds per state after the
#            recording, from the wall time less the recorded boot's own.
# Per round: states enumerated and distinct, the judging time and rates
# (report.json `exploration`), the classic seconds per state, and the
# ratio of the j2 rate to the classic rate (both measured in that round).
# Then the median, min and max of each figure over the rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-scenarios/explore-load-at-boot-x86_64.toml}
rounds=${2:-3}
cargo build -q --release -p airboot
bin=./target/release/airboot
work=$(mktemp -d)
classic="$(dirname "$scenario")/.bench-explore-classic-$$.toml"
trap 'rm -rf "$work" "$classic"' EXIT
sed -e 's|^points *=.*|points = 8|' -e '/^states_per_point *=/d' -e '/^sample *=/d' -e '/^markers *=/d' \
    -e 's|^modes *=.*|modes = ["lose-unflushed"]|' "$scenario" >"$classic"

num() { grep -o "\"$1\": *[0-9.e+-]*" "$2" | head -1 | grep -o '[0-9.e+-]*$'; }
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

printf '%-5s %-8s %9s %9s %9s %10s %10s %10s\n' round run states distinct judge_s states/s distinct/s s/state
declare -A series
for r in $(seq 1 "$rounds"); do
    for run in j1 j2; do
        dir="$work/$r-$run"
        "$bin" cut "$scenario" --offline --jobs "${run#j}" --report-dir "$dir" >"$dir.out" 2>&1 || true
        n=$(num enumerated "$dir/report.json") d=$(num judged_offline "$dir/report.json")
        s=$(num judge_s "$dir/report.json")
        rate=$(awk -v n="$n" -v s="$s" 'BEGIN { print n / s }')
        drate=$(awk -v n="$d" -v s="$s" 'BEGIN { print n / s }')
        printf '%-5s %-8s %9s %9s %9s %10s %10s %10s\n' "$r" "$run" "$n" "$d" "$(fig "$s")" "$(fig "$rate")" "$(fig "$drate")" -
        series[$run-rate]+="$rate " series[$run-drate]+="$drate "
    done
    dir="$work/$r-classic"
    start=$(date +%s.%N)
    "$bin" cut "$classic" --offline --report-dir "$dir" >"$dir.out" 2>&1 || true
    end=$(date +%s.%N)
    rec=$(num wall_s "$dir/record/report.json")
    cuts=$(grep -c '"bundle":' "$dir/report.json" || true)
    per=$(awk -v s="$start" -v e="$end" -v rec="$rec" -v n="$cuts" 'BEGIN { print (e - s - rec) / n }')
    printf '%-5s %-8s %9s %9s %9s %10s %10s %10s\n' "$r" classic "$cuts" "$cuts" - "$(fig "$(awk -v p="$per" 'BEGIN { print 1 / p }')")" - "$(fig "$per")"
    series[classic]+="$per "
    j2=$(echo "${series[j2-rate]}" | awk '{ print $NF }')
    series[ratio]+="$(awk -v a="$j2" -v p="$per" 'BEGIN { print a * p }') "
done

echo
echo "j1 states/s (enumerated, judged offline) ..... $(stats "${series[j1-rate]}")"
echo "j1 distinct states/s ......................... $(stats "${series[j1-drate]}")"
echo "j2 states/s .................................. $(stats "${series[j2-rate]}")"
echo "j2 distinct states/s ......................... $(stats "${series[j2-drate]}")"
echo "classic seconds per state (one by one) ....... $(stats "${series[classic]}")"
echo "j2 states/s against classic states/s ......... $(stats "${series[ratio]}") x"
