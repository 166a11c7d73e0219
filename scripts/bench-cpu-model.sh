#!/usr/bin/env bash
# Benchmark: which QEMU `-cpu` model boots the fixtures fastest under TCG.
#
#   bash scripts/bench-cpu-model.sh [ROUNDS] [SCENARIO] [MODEL...]
#   default: 3 rounds of scenarios/preseeded-x86_64.toml under max, qemu64
#   and Nehalem; for an aarch64 scenario: max,pauth-impdef=on (airboot's
#   default), cortex-a72, neoverse-n1 and cortex-a57.
#
# Each round boots the scenario once per model, in turn (so a noisy
# neighbour hits every model alike), with `cpu = MODEL` set under
# [machine] in a copy of the scenario and `--accel tcg`. Per boot: time to
# running stack (report.json: power-on to every expectation held, from the
# guest's own clocks) and the verdict. Then, per model, the median with min
# and max, and its ratio to the first model's median. A model whose boot
# did not pass is marked: it cannot be the default.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
scenario=${2:-scenarios/preseeded-x86_64.toml}
shift $(( $# < 2 ? $# : 2 ))
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
    if grep -q '^arch *= *"aarch64"' "$scenario"; then
        models=("max,pauth-impdef=on" cortex-a72 neoverse-n1 cortex-a57)
    else
        models=(max qemu64 Nehalem)
    fi
fi
cargo build -q --release -p airboot
bin=$PWD/target/release/airboot
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
work=$(mktemp -d /var/tmp/airboot-bench-cpu.XXXXXX)
made=()
trap 'rm -rf "$work" "${made[@]}"' EXIT

# A copy of the scenario beside it (relative paths still resolve) with cpu = MODEL.
for i in "${!models[@]}"; do
    made+=("$(dirname "$scenario")/.bench-cpu-$i-$$.toml")
    scenario_variant "$scenario" cpu "\"${models[$i]}\"" "${made[$i]}"
done

printf '%-6s %-22s %9s %9s %s\n' round model "stack(s)" "wall(s)" verdict
for r in $(seq 1 "$rounds"); do
    for i in "${!models[@]}"; do
        dir="$work/$r-$i"
        start=$(date +%s.%N)
        "$bin" run "${made[$i]}" --accel tcg --report-dir "$dir" >/dev/null 2>"$dir.err" || true
        wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
        read -r stack verdict < <(python3 -c '
import json, sys
try:
    r = json.load(open(sys.argv[1]))
    t = r.get("time_to_stack_s")
    print("NA" if t is None else "%.1f" % t, r.get("verdict", "none"))
except Exception:
    print("NA none")' "$dir/report.json")
        printf '%-6s %-22s %9s %9s %s\n' "$r" "${models[$i]}" "$stack" "$wall" "$verdict"
        echo "$i $stack $verdict" >>"$work/figures"
    done
done
echo
base=""
for i in "${!models[@]}"; do
    vals=$(awk -v i="$i" '$1 == i && $2 != "NA" { print $2 }' "$work/figures" | tr '\n' ' ')
    bad=$(awk -v i="$i" '$1 == i && $3 != "pass"' "$work/figures" | wc -l)
    [ -n "$vals" ] || { printf '%-22s no boot reached the stack\n' "${models[$i]}"; continue; }
    med=$(echo "$vals" | tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    [ -n "$base" ] || base=$med
    printf '%-22s time to stack %s s   ratio to %s: %s%s\n' "${models[$i]}" "$(stats "$vals")" "${models[0]}" \
        "$(fig "$(awk -v m="$med" -v b="$base" 'BEGIN { print m / b }')")" \
        "$([ "$bad" -eq 0 ] || echo "   ($bad boot(s) did not pass)")"
done
