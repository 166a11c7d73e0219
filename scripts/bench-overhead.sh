#!/usr/bin/env bash
# Benchmark: what airboot adds to a boot it times, and what it costs
# itself.
#
#   bash scripts/bench-overhead.sh [ROUNDS] [LINE] [FIXTURE]
#   (default 5 rounds, the line the getty prints before its prompt, the fixture
#   debian-preseeded-x86_64)
#
# The fixture's disk is converted to one raw file (as a user's build
# leaves it: a few GB, every byte hashed), and a scenario boots it with the
# fixture's kernel over virtio-serial (no vsock helper). One airboot run
# gives the QEMU command it used (report.json qemu.argv). Then, in
# alternating pairs: that bare QEMU command (not paused: -S dropped; its
# overlay, QMP and probe sockets moved to a folder of the bench), and
# `airboot run` of the scenario. Each is timed from its process start to
# the console line LINE: QEMU's output is stamped line by line as it
# arrives; airboot's from its own stamps (its "t0: guest started" line as
# it arrived, then the line's time after t0 in console.log, which airboot
# writes through a buffer). The ratio airboot/bare of each pair is
# printed, and how much of airboot's time came before t0 (its start until
# the guest's CPUs run). airboot's own CPU (user+system of the airboot
# process, without QEMU) and its peak resident memory (VmHWM) are sampled
# from /proc while it runs; its CPU is given as a share of one core while
# its QEMU ran, and over the whole run (which adds the input's full hash
# after the guest stopped).
#
# Then the median, min and max over the rounds. Goal: ratio ≤ 1.03,
# airboot ≤ 2 % of a core and ≤ 30 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
line=${2:-Debian GNU/Linux 12 airboot-fixture}
fixture=${3:-debian-preseeded-x86_64}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_start overhead "$fixture"
raw_fixture_scenario "$fx" "$work" device 'transport = "virtio-serial"'
size=$(stat -c %s "$work/device.raw")

now() { date +%s.%N; }
# Wait until $1 holds the line (or $2, a pid, ended, or 10 minutes
# passed): the seconds since $3, or "fail".
wait_line() {
    local f=$1 pid=$2 t0=$3 n=0
    while ! grep -q -- "$line" "$f" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { echo fail; return; }
        n=$((n + 1)); [ $n -lt 12000 ] || { echo fail; return; }   # 10 minutes
        sleep 0.05
    done
    awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'
}

# Each output line of a program, prefixed with the time it arrived: one
# process for the whole stream (a shell loop forking `date` per line lags
# behind a fast console and takes CPU from the guest it times).
stamp() {
    python3 -u -c '
import sys, time
for l in sys.stdin.buffer:
    sys.stdout.buffer.write(b"%.6f " % time.time() + l)
    sys.stdout.flush()'
}

# One `airboot run`: when the line came (seconds from the process start:
# until t0, from airboot's own "t0: guest started" line as it arrived;
# after t0, the line's time in console.log, which airboot stamps as it
# reads), airboot's CPU, its peak RSS and its wall time.
airboot_run() {
    local r=$1 t0 pid cpu hwm bcpu bs at
    rm -rf "$work/r$r"
    t0=$(now)
    "$bin" run "$work/device.toml" --no-build --report-dir "$work/r$r" > >(stamp >"$work/airboot$r.log") 2>&1 &
    pid=$!
    read -r cpu hwm bcpu bs < <(watch_airboot $pid)
    wait $pid || true
    sleep 0.5
    local wall; wall=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }')
    local started line_t
    started=$(grep -m1 "t0: guest started" "$work/airboot$r.log" | cut -d' ' -f1)
    line_t=$(grep -m1 -F -- "$line" "$work/r$r/console.log" | sed -n 's/^\[+ *\([0-9.]*\)s\].*/\1/p')
    if [ -z "$started" ] || [ -z "$line_t" ]; then at=fail; else
        at=$(awk -v a="$t0" -v s="$started" -v l="$line_t" 'BEGIN { printf "%.2f", s - a + l }'); fi
    # Before t0: what airboot does before the guest's CPUs run.
    local pre; pre=$([ -n "$started" ] && awk -v a="$t0" -v s="$started" 'BEGIN { printf "%.2f", s - a }' || echo fail)
    echo "$at $cpu $hwm $wall $bcpu $bs $pre"
}

echo "input: $work/device.raw ($(( size >> 20 )) MiB raw); line: \"$line\""
echo "one airboot run for its QEMU command ..."
read -r first _ _ _ < <(airboot_run 0)
[ "$first" != fail ] || { echo "the first airboot run never printed the line (see $work)" >&2; trap - EXIT; exit 2; }
argv=$(python3 - "$work/r0/report.json" "$work/bare" <<'PY'
import json, re, shlex, sys
r = json.load(open(sys.argv[1]))
if r.get("verdict") != "pass":
    sys.exit("the airboot run did not pass: " + "; ".join(f["message"] for f in r.get("failures", [])))
a = [x for x in r["qemu"]["argv"] if x != "-S"]
# Every path in airboot's temporary folder moves to the bench's.
tmp = re.search(r"(/[^,=\s]*/airboot-[0-9]+-boot-[^/,]+)/", " ".join(a)).group(1)
print(" ".join(shlex.quote(x.replace(tmp, sys.argv[2])) for x in a))
PY
)
qemu=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['qemu'].get('binary') or 'qemu-system-x86_64')" "$work/r0/report.json")

bare_run() {
    local r=$1 t0 pid at
    rm -rf "$work/bare"; mkdir -p "$work/bare"
    qemu-img create -q -f qcow2 -F raw -b "$work/device.raw" "$work/bare/overlay.qcow2"
    t0=$(now)
    # exec: $! is QEMU itself, which the kill below must reach.
    eval "exec $qemu $argv" > >(stamp >"$work/bare$r.log") 2>&1 </dev/null &
    pid=$!
    wait_line "$work/bare$r.log" $pid "$t0" >/dev/null
    kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
    sleep 0.5
    at=$(grep -m1 -F -- "$line" "$work/bare$r.log" | awk -v a="$t0" '{ printf "%.2f", $1 - a }')
    echo "${at:-fail}"
}

printf '%-5s %8s %9s %7s %8s %12s %10s %10s %8s\n' round "bare(s)" "airboot(s)" ratio "pre-t0" "airboot cpu" "% booting" "% of run" "RSS MiB"
ratios="" bares="" airs="" shares="" bshares="" pres="" rss=""
for r in $(seq 1 "$rounds"); do
    b=$(bare_run "$r")
    read -r a cpu hwm wall bcpu bs pre < <(airboot_run "$r")
    if [ "$b" = fail ] || [ "$a" = fail ]; then echo "round $r: the line never came (see $work)"; continue; fi
    ratio=$(fig "$(awk -v a="$a" -v b="$b" 'BEGIN { print a / b }')")
    share=$(fig "$(awk -v c="$cpu" -v w="$wall" 'BEGIN { print 100 * c / w }')")
    bshare=$(fig "$(awk -v c="$bcpu" -v w="$bs" 'BEGIN { print (w > 0) ? 100 * c / w : 0 }')")
    mib=$(fig "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')")
    printf '%-5s %8s %9s %7s %8s %11ss %10s %10s %8s\n' "$r" "$b" "$a" "$ratio" "$pre" "$cpu" "$bshare" "$share" "$mib"
    ratios="$ratios $ratio" bares="$bares $b" airs="$airs $a" shares="$shares $share" bshares="$bshares $bshare"
    pres="$pres $pre" rss="$rss $mib"
done
echo
echo "bare QEMU to the line:   $(stats "$bares") s"
echo "airboot to the line:     $(stats "$airs") s"
echo "  of which before t0:    $(stats "$pres") s (airboot's start until the guest's CPUs run)"
echo "ratio airboot/bare:      $(stats "$ratios")   (goal ≤ 1.03)"
echo "airboot's own CPU:       $(stats "$bshares") % of one core while its QEMU ran   (goal ≤ 2)"
echo "                         $(stats "$shares") % over the whole run (with the input's full hash after it)"
echo "airboot's peak RSS:      $(stats "$rss") MiB   (goal ≤ 30)"
