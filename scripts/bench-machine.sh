#!/usr/bin/env bash
# Benchmark: how one `[machine]` setting changes boot time on this host.
# Boots one scenario ROUNDS times with KEY = A and ROUNDS times with
# KEY = B, interleaved (A, B, A, B, ...) so that a noisy neighbour hits
# both sides alike, and prints per-run figures, then for each side the
# median with min and max, and the ratio of the medians (A/B).
#
#   bash scripts/bench-machine.sh KEY A B [SCENARIO] [ROUNDS]
#   bash scripts/bench-machine.sh cpus 1 2
#   bash scripts/bench-machine.sh cpu '"max"' '"qemu64"'
#   (values are TOML; default scenarios/preseeded-x86_64.toml, 3 rounds)
#
# Figures: time to running stack (power-on -> every expectation held, from
# report.json, the guest's own clocks) and the wall time of the whole
# `airboot run` (boot, image test runs, shutdown). One VM at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
key=$1 a=$2 b=$3
scenario=${4:-scenarios/preseeded-x86_64.toml}
rounds=${5:-3}
cargo build -q --release -p airboot
bin=./target/release/airboot
work=$(mktemp -d)
made=()
trap 'rm -rf "$work" "${made[@]}"' EXIT

# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
# The scenario with `KEY = VALUE` under [machine], in a copy next to it.
variant() {
    local out
    out="$(dirname "$scenario")/.bench-machine-$1-$$.toml"
    scenario_variant "$scenario" "$key" "$2" "$out"
    echo "$out"
}
va=$(variant a "$a")
vb=$(variant b "$b")
made=("$va" "$vb")

printf '%-6s %-12s %10s %10s %s\n' round "$key" stack_s wall_s verdict
for r in $(seq 1 "$rounds"); do
    for side in a b; do
        v=$va value=$a
        [ "$side" = b ] && v=$vb value=$b
        dir="$work/$r-$side"
        start=$(date +%s.%N)
        "$bin" run "$v" --report-dir "$dir" >/dev/null 2>"$dir.err" || true
        end=$(date +%s.%N)
        wall=$(awk -v s="$start" -v e="$end" 'BEGIN { print e - s }')
        stack=$(grep -o '"time_to_stack_s": *[0-9.]*' "$dir/report.json" | grep -o '[0-9.]*$' || echo NA)
        [ "$stack" = NA ] || stack=$(printf '%.1f' "$stack")
        verdict=$(grep -o '"verdict": *"[a-z]*"' "$dir/report.json" | head -1 | grep -o '"[a-z]*"$' || echo '"none"')
        printf '%-6s %-12s %10s %10.1f %s\n' "$r" "$value" "$stack" "$wall" "$verdict"
        echo "$side $stack $wall" >>"$work/figures"
    done
done

# median min max of the numbers on stdin
stats() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "NA NA NA"; else printf "%.1f %.1f %.1f\n", ((NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2), a[1], a[NR]}'; }
for col in 2 3; do
    name=$([ $col = 2 ] && echo "time to stack" || echo "wall time")
    read -r ma mina maxa < <(awk -v c=$col '$1=="a" && $c!="NA" {print $c}' "$work/figures" | stats)
    read -r mb minb maxb < <(awk -v c=$col '$1=="b" && $c!="NA" {print $c}' "$work/figures" | stats)
    ratio=$(awk -v x="$ma" -v y="$mb" 'BEGIN { if (x=="NA" || y=="NA" || y==0) print "NA"; else printf "%.2f", x/y }')
    printf '%-14s %s=%s: median %s s (%s-%s)   %s=%s: median %s s (%s-%s)   ratio A/B %s\n' \
        "$name" "$key" "$a" "$ma" "$mina" "$maxa" "$key" "$b" "$mb" "$minb" "$maxb" "$ratio"
done
