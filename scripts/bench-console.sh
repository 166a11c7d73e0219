#!/usr/bin/env bash
# Benchmark: airboot's CPU per MiB of serial console output.
#
#   bash scripts/bench-console.sh [MIB] [ROUNDS] [FIXTURE]
#   (default 20 MiB, 3 rounds, debian-preseeded-x86_64)
#
# Two raw copies of the fixture's disk: one as built ("quiet"), one whose
# probe starts the real probe and, 5 s later (the probe answering by
# then), writes MIB MiB with no newline to the serial console, then a
# newline ("flood"). Each round boots both by
# `airboot run`. airboot's own CPU (user+system of the airboot process,
# without QEMU) and its peak resident memory are sampled from /proc; the
# CPU counted is what it used while its QEMU ran (after it, airboot hashes
# the whole input again, which costs the same for both disks and is
# noise here). Round 0 is not counted: it fills airboot's input-hash cache
# for both copies (otherwise hashed while they boot). Per round, the CPU
# the flood cost: (flood - quiet) / MIB seconds per MiB. Then the median,
# min and max; goal ≤ 0.05 s of CPU per MiB, memory flat. Also the quiet
# boot's CPU as a share of one core while the guest ran (goal ≤ 2 %).
# The per-MiB figure divides by the console bytes the flood run read beyond
# the quiet one (report.json console.bytes), not by MIB: a flood airboot
# stopped part way would otherwise look cheap.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-20}
rounds=${2:-3}
fixture=${3:-debian-preseeded-x86_64}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_start console "$fixture"
for kind in quiet flood; do
    raw_fixture_scenario "$fx" "$work" "$kind"
    # Both runs stay up 60 s after the stack ran, so the whole flood is read
    # (at about 0.5 MiB/s under TCG) before airboot powers the guest off.
    printf '\n[[step]]\nname = "drain"\nrun = "sleep 60"\ntimeout = "90s"\n' >>"$work/$kind.toml"
done
probe=/usr/local/sbin/airboot-probe
cat > "$work/flood.sh" <<SH
#!/bin/sh
# The flood starts once the probe answers, so that the run differs from the
# quiet one by the console's bytes, not by a longer wait for the probe.
( sleep 5; head -c $((mib << 20)) /dev/zero | tr '\\000' x > /dev/ttyS0; echo > /dev/ttyS0 ) &
exec $probe.real "\$@"
SH
debugfs -R "dump $probe $work/probe.real" "$work/flood.raw" >/dev/null 2>&1
for cmd in "write $work/probe.real $probe.real" "sif $probe.real mode 0100755" "rm $probe" \
    "write $work/flood.sh $probe" "sif $probe mode 0100755"; do
    debugfs -w -R "$cmd" "$work/flood.raw" >/dev/null 2>&1
done
debugfs -R "cat $probe" "$work/flood.raw" 2>/dev/null >"$work/check"
grep -q "head -c" "$work/check" || { echo "could not edit the flood disk" >&2; exit 2; }

run() {
    local kind=$1 r=$2 pid t0
    t0=$(date +%s.%N)
    "$bin" run "$work/$kind.toml" --no-build --report-dir "$work/$kind-$r" >"$work/$kind-$r.log" 2>&1 &
    pid=$!
    local cpu hwm bcpu bs
    read -r cpu hwm bcpu bs < <(watch_airboot $pid)
    local st=0; wait $pid || st=$?
    # The console bytes airboot read (report.json console.bytes).
    local got; got=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["console"]["bytes"])' "$work/$kind-$r/report.json" 2>/dev/null || echo 0)
    echo "$bcpu $bs $hwm $st $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') $got"
}

kib2mib() { fig "$(awk -v k="$1" 'BEGIN { print k / 1024 }')"; }
printf '%-5s %-6s %14s %10s %9s %8s %5s %12s\n' round run "cpu booting(s)" "booting(s)" "RSS MiB" "wall(s)" exit "console MiB"
per="" share="" rq="" rf=""
for r in $(seq 0 "$rounds"); do
    if ! read -r cq bq hq sq wq gq < <(run quiet "$r") || [ -z "$gq" ]; then
        echo "round $r: the quiet run gave no figures (KEEP=1 keeps its log)"; continue
    fi
    printf '%-5s %-6s %14s %10s %9s %8s %5s %12s\n' "$r" quiet "$cq" "$bq" "$(kib2mib "$hq")" "$wq" "$sq" "$(kib2mib $((gq >> 10)))"
    if ! read -r cf bf hf sf wf gf < <(run flood "$r") || [ -z "$gf" ]; then
        echo "round $r: the flood run gave no figures (KEEP=1 keeps its log)"; continue
    fi
    printf '%-5s %-6s %14s %10s %9s %8s %5s %12s\n' "$r" flood "$cf" "$bf" "$(kib2mib "$hf")" "$wf" "$sf" "$(kib2mib $((gf >> 10)))"
    [ "$r" -gt 0 ] || { echo "      (round 0 fills the input-hash cache: not counted)"; continue; }
    # Per MiB the flood run read beyond the quiet one (all of MIB, unless
    # airboot stopped the guest before the flood ended).
    per="$per $(awk -v f="$cf" -v q="$cq" -v a="$gf" -v b="$gq" 'BEGIN { d = (a - b) / 1048576; printf "%.4f", (d > 0) ? (f - q) / d : 0 }')"
    share="$share $(awk -v c="$cq" -v s="$bq" 'BEGIN { printf "%.2f", (s > 0) ? 100 * c / s : 0 }')"
    rq="$rq $(kib2mib "$hq")" rf="$rf $(kib2mib "$hf")"
done
echo
echo "CPU per MiB of console:   $(stats "$per") s   (goal ≤ 0.05)"
echo "quiet boot, airboot's CPU: $(stats "$share") % of a core while the guest ran   (goal ≤ 2)"
echo "peak RSS: quiet $(stats "$rq") MiB; flood $(stats "$rf") MiB"
