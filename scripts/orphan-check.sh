#!/usr/bin/env bash
# No orphans, measured: sends SIGINT, SIGTERM or SIGKILL to airboot at a
# random moment of its work, TRIALS times, and reports what outlived it:
# processes, mounts, nbd devices and temporary folders.
#
#   scripts/orphan-check.sh [TRIALS] [SEED]     (default: 50 trials, seed 21)
#   PHASES="build boot" scripts/orphan-check.sh 10   (only those phases)
#
# The phases, taken in turn (the moment at random within each):
#   build   `airboot images build` of a fixture into a cache of its own
#           (mmdebstrap, a private dockerd)
#   boot    `airboot run` of the preseeded fixture (QEMU, vhost-device-vsock)
#   record  `airboot cut --offline` of cut-load-at-boot: the recorded boot,
#           then each crash state made with qemu-nbd and checked (e2fsck)
#   judge   `airboot cut --recording --offline` of the exploration: working
#           copies in /dev/shm, e2fsck, e2undo
#   nbd     the same as record, the signal sent while a qemu-nbd runs
#   repro   `airboot repro` of a bundle (a crash state powered on)
# The signal goes to airboot's pid alone, as `kill` would send it.
#
# After each trial: airboot must end within 120 s of the signal; then
# every process of the trial (found by an environment variable every child
# inherits, and by name: QEMU, qemu-nbd, vhost-device-vsock, mmdebstrap,
# dockerd, e2fsck) must be gone, no mount may be new, no nbd device
# connected, and no temporary folder left: in the trial's TMPDIR, /tmp,
# /dev/shm and the build cache. A run killed outright (SIGKILL) cannot
# remove its own folders: the next airboot command removes them, and the
# script counts them both right after the kill and after that next start.
#
# Needs root, the ci fixtures (scripts/test.sh builds them) and about an
# hour for 50 trials on two cores. Run nothing else meanwhile: a helper of
# another program, started during a trial, would count as left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-50}
RANDOM=${2:-21}
cargo build -q -p airboot
bin=$PWD/target/debug/airboot
work=/var/tmp/airboot-orphans
# The preparation (a bundle, a recording) is kept between invocations.
rm -rf "$work"/t* "$work/cache"
mkdir -p "$work"
names='qemu-system|qemu-nbd|vhost-device-vs|mmdebstrap|dockerd|containerd|e2fsck|e2undo|debugfs'

mounts() { cut -d' ' -f5 /proc/self/mountinfo | sort; }
nbd_connected() { local n=0 f; for f in /sys/block/nbd*/pid; do [ -e "$f" ] && n=$((n + 1)); done; echo $n; }
# Processes carrying this trial's mark, or named like a helper.
trial_procs() {
    local mark=$1 p out=""
    for p in /proc/[0-9]*; do
        if tr '\0' '\n' 2>/dev/null < "$p/environ" | grep -qx "AIRBOOT_ORPHAN_TRIAL=$mark"; then
            out="$out ${p#/proc/}:$(cat "$p/comm" 2>/dev/null)"
        fi
    done
    # By name too (a helper may scrub its environment), if it started
    # after the trial did.
    for p in $(pgrep -f "$names" || true); do
        [ "$p" = $$ ] && continue
        [ "$(awk '{ print $22 }' "/proc/$p/stat" 2>/dev/null || echo 0)" -ge "${trial_ticks:-0}" ] || continue
        grep -qE "$names" "/proc/$p/comm" 2>/dev/null && out="$out $p:$(cat "/proc/$p/comm")"
    done
    echo "$out" | tr ' ' '\n' | grep . | sort -u | tr '\n' ' ' || true
}
temp_left() {
    local tmp=$1
    { find "$tmp" -mindepth 1 -maxdepth 1 2>/dev/null
      find /tmp /dev/shm -mindepth 1 -maxdepth 1 -name 'airboot-*' 2>/dev/null
      find "$work/cache" -mindepth 2 -maxdepth 2 -name '*.tmp-*' 2>/dev/null; } | sort -u || true
}

echo "== preparing: a bundle to repro and an exploration's recording (a few minutes)"
if [ -n "$(trial_procs none)" ]; then
    echo "helpers are already running before the first trial: $(trial_procs none)" >&2
    exit 2
fi
# A preparation made from another build of the fixture (rebuilt, or
# removed by `airboot images clean`) would fail at once: make it again.
prep_key=$("$bin" images path debian-load-at-boot-x86_64 2>/dev/null || true)
if [ "$(cat "$work/prep.key" 2>/dev/null)" != "$prep_key" ]; then
    rm -rf "$work/prep-cut" "$work/prep-rec"
fi
[ -n "$(find "$work/prep-cut" -name cut.json 2>/dev/null)" ] ||
    "$bin" cut scenarios/cut-load-at-boot-x86_64.toml --offline --report-dir "$work/prep-cut" >/dev/null 2>&1 || true
bundle=$(dirname "$(find "$work/prep-cut" -name cut.json | sort | head -1)")
[ -d "$work/prep-rec/record" ] ||
    "$bin" cut scenarios/explore-load-at-boot-x86_64.toml --record-only --report-dir "$work/prep-rec" >/dev/null 2>&1 || true
recording=$work/prep-rec/record
echo "$prep_key" > "$work/prep.key"
[ -f "$bundle/cut.json" ] && [ -d "$recording" ] || { echo "preparation failed (see $work)" >&2; exit 2; }
base_mounts=$(mounts)

read -r -a phases <<<"${PHASES:-build boot record judge nbd repro}"
np_=${#phases[@]}
signals=(INT TERM KILL)
hangs=0 left_procs=0 left_mounts=0 left_nbd=0 left_tmp_after=0 left_tmp_next=0
printf '%-5s %-6s %-4s %6s %6s  %s\n' trial phase sig "at(s)" "end(s)" "left: processes / mounts / nbd / temp right after / temp after the next start"
for i in $(seq 1 "$trials"); do
    phase=${phases[$(( (i - 1) % np_ ))]}
    sig=${signals[$(( ((i - 1) / np_ + (i - 1)) % 3 ))]}
    t=$work/t$i
    mkdir -p "$t/tmp"
    # In clock ticks since boot, as /proc/PID/stat gives a start time.
    trial_ticks=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", $1 * hz }' /proc/uptime)
    # A build starts from an empty cache every time (else it may finish
    # before the signal): mmdebstrap, the kernel, the images, dockerd.
    [ "$phase" = build ] && rm -rf "$work/cache"
    export AIRBOOT_ORPHAN_TRIAL=$i TMPDIR=$t/tmp
    case $phase in
        build) at=$(( 3 + RANDOM % 100 )); cmd=(env AIRBOOT_CACHE="$work/cache" "$bin" images build debian-preseeded-x86_64) ;;
        boot) at=$(( 2 + RANDOM % 70 )); cmd=("$bin" run scenarios/preseeded-x86_64.toml --no-build --report-dir "$t/r") ;;
        record) at=$(( 3 + RANDOM % 60 )); cmd=("$bin" cut scenarios/cut-load-at-boot-x86_64.toml --offline --report-dir "$t/r") ;;
        judge) at=$(( 1 + RANDOM % 25 )); cmd=("$bin" cut scenarios/explore-load-at-boot-x86_64.toml --recording "$recording" --offline --report-dir "$t/r") ;;
        nbd) at=nbd; cmd=("$bin" cut scenarios/cut-load-at-boot-x86_64.toml --offline --report-dir "$t/r") ;;
        repro) at=$(( 2 + RANDOM % 70 )); cmd=("$bin" repro "$bundle" --report-dir "$t/r") ;;
    esac
    "${cmd[@]}" > "$t/out.log" 2>&1 &
    pid=$!
    start=$(date +%s.%N)
    if [ "$at" = nbd ]; then
        # Until a qemu-nbd of this trial runs (at most 240 s), then a moment.
        for _ in $(seq 1 2400); do
            trial_procs "$i" | grep -q qemu-nbd && break
            kill -0 $pid 2>/dev/null || break
            sleep 0.1
        done
        sleep "0.$(( RANDOM % 10 ))"
    else
        for _ in $(seq 1 $(( at * 10 ))); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
    fi
    sent=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if ! kill -0 $pid 2>/dev/null; then
        wait $pid 2>/dev/null || true
        printf '%-5s %-6s %-4s %6s %6s  finished before the signal (exit status in %s)\n' "$i" "$phase" "$sig" "$sent" - "$t/out.log"
        unset AIRBOOT_ORPHAN_TRIAL
        continue
    fi
    kill -s "$sig" $pid 2>/dev/null || true
    ended=-
    for n in $(seq 1 1200); do
        if ! kill -0 $pid 2>/dev/null; then ended=$(awk -v n="$n" 'BEGIN { printf "%.1f", n / 10 }'); break; fi
        sleep 0.1
    done
    if [ "$ended" = - ]; then hangs=$((hangs + 1)); kill -9 $pid 2>/dev/null || true; fi
    wait $pid 2>/dev/null || true
    unset AIRBOOT_ORPHAN_TRIAL
    sleep 3
    procs=$(trial_procs "$i")
    new_mounts=$(comm -13 <(echo "$base_mounts") <(mounts) | tr '\n' ' ')
    nbd=$(nbd_connected)
    after=$(temp_left "$t/tmp" | wc -l)
    # The next airboot command that boots, cuts, repros or builds sweeps
    # what a killed one left: one that refuses at once (no such file).
    AIRBOOT_CACHE="$work/cache" "$bin" images build no-such-fixture >/dev/null 2>&1 || true
    next=$(temp_left "$t/tmp" | wc -l)
    np=$(echo "$procs" | wc -w); nm=$(echo "$new_mounts" | wc -w)
    left_procs=$((left_procs + np)); left_mounts=$((left_mounts + nm)); left_nbd=$((left_nbd + nbd))
    left_tmp_after=$((left_tmp_after + after)); left_tmp_next=$((left_tmp_next + next))
    printf '%-5s %-6s %-4s %6s %6s  %s / %s / %s / %s / %s %s%s\n' "$i" "$phase" "$sig" "$sent" "$ended" \
        "$np" "$nm" "$nbd" "$after" "$next" "${procs:+procs: $procs }" "${new_mounts:+mounts: $new_mounts}"
    # Clean up what was left, so the next trial starts from nothing.
    for p in $procs; do kill -9 "${p%%:*}" 2>/dev/null || true; done
    for m in $new_mounts; do umount -l "$m" 2>/dev/null || true; done
    temp_left "$t/tmp" | xargs -r rm -rf
done
echo
echo "over $trials trials: $hangs hang(s); left behind: $left_procs process(es), $left_mounts mount(s), $left_nbd nbd device(s);"
echo "temporary folders: $left_tmp_after right after the signal (SIGKILL leaves its own), $left_tmp_next after the next airboot start"
rm -rf "$work/cache"
