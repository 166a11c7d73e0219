#!/usr/bin/env bash
# Benchmark: how the guest's vCPU count changes boot time on this host.
# Boots one scenario ROUNDS times with `cpus = 1` and ROUNDS times with
# `cpus = 2`, interleaved (1, 2, 1, 2, ...) so that a noisy neighbour hits
# both sides alike, and prints per-run figures, the medians and the ratio.
#
#   bash scripts/bench-cpus.sh [SCENARIO] [ROUNDS]
#   (default scenarios/preseeded-x86_64.toml, 3 rounds: about 15 min on TCG)
#
# Figures: time to running stack (power-on -> every expectation held, from
# report.json) and the wall time of the whole `airboot run` (boot, image
# test runs, shutdown). One VM at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-scenarios/preseeded-x86_64.toml}
rounds=${2:-3}
cargo build -q --release -p airboot
bin=./target/release/airboot
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The scenario with `cpus = N`, in a copy (a relative image path in the
# scenario is resolved from the scenario's folder, so the copy stays there).
variant() {
    local n=$1 out
    out="$(dirname "$scenario")/.bench-cpus-$n-$$.toml"
    if grep -q '^cpus *=' "$scenario"; then
        sed "s/^cpus *=.*/cpus = $n/" "$scenario" >"$out"
    elif grep -q '^\[machine\]' "$scenario"; then
        sed "s/^\[machine\]/[machine]\ncpus = $n/" "$scenario" >"$out"
    else
        { cat "$scenario"; printf '\n[machine]\ncpus = %s\n' "$n"; } >"$out"
    fi
    echo "$out"
}
v1=$(variant 1)
v2=$(variant 2)
trap 'rm -rf "$work" "$v1" "$v2"' EXIT

printf '%-6s %-5s %10s %10s %s\n' round cpus stack_s wall_s verdict
for r in $(seq 1 "$rounds"); do
    for n in 1 2; do
        v=$v1
        [ "$n" = 2 ] && v=$v2
        dir="$work/$r-$n"
        start=$(date +%s.%N)
        "$bin" run "$v" --report-dir "$dir" >/dev/null 2>"$dir.err" || true
        end=$(date +%s.%N)
        wall=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
        stack=$(grep -o '"time_to_stack_s": *[0-9.]*' "$dir/report.json" | grep -o '[0-9.]*$' || echo NA)
        [ "$stack" = NA ] || stack=$(printf '%.1f' "$stack")
        verdict=$(grep -o '"verdict": *"[a-z]*"' "$dir/report.json" | head -1 | grep -o '"[a-z]*"$' || echo '"none"')
        printf '%-6s %-5s %10s %10.1f %s\n' "$r" "$n" "$stack" "$wall" "$verdict"
        echo "$n $stack $wall" >>"$work/figures"
    done
done

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "NA"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
for col in 2 3; do
    name=$([ $col = 2 ] && echo "time to stack" || echo "wall time")
    m1=$(awk -v c=$col '$1==1 && $c!="NA" {print $c}' "$work/figures" | median)
    m2=$(awk -v c=$col '$1==2 && $c!="NA" {print $c}' "$work/figures" | median)
    ratio=$(awk -v a="$m1" -v b="$m2" 'BEGIN { if (a=="NA" || b=="NA" || b==0) print "NA"; else printf "%.2f", a/b }')
    printf '%-14s median cpus=1 %8.1f s   cpus=2 %8.1f s   ratio 1/2 = %s\n' "$name" "$m1" "$m2" "$ratio"
done
