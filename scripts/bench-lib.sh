# Shared by the bench scripts (sourced, not run).

# A number to two decimals.
fig() { awk -v v="$1" 'BEGIN { printf "%.2f", v }'; }

# "median M (min A, max B, N rounds)" of the space-separated numbers in $1.
stats() {
    echo "$1" | tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "median %.2f (min %.2f, max %.2f, %d rounds)", m, v[1], v[NR], NR }'
}

# raw_fixture_scenario FIXTURE_DIR WORK NAME [MACHINE_LINE]
# Writes WORK/NAME.raw, the fixture's disk as one raw file (what a build
# leaves: every byte of it hashed by airboot), and WORK/NAME.toml, a scenario
# that boots it with the fixture's own kernel, initrd and command line and
# expects the fixture's images and containers. The disk carries the probe
# (`probe = true`: a `path` image is otherwise taken to have none and gets one
# injected). MACHINE_LINE is added to [machine], e.g. 'transport = "virtio-serial"'.
raw_fixture_scenario() {
    local fx=$1 work=$2 name=$3 extra=${4:-}
    qemu-img convert -O raw "$fx/disk.qcow2" "$work/$name.raw"
    python3 - "$fx/fixture.json" "$work" "$name" "$extra" > "$work/$name.toml" <<'PY'
import json, os, sys
f, work, name, extra = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
fx = json.load(open(f))
d = os.path.dirname(f)
q = json.dumps
print(f'name = {q(name)}\n\n[image]\npath = {q(f"{work}/{name}.raw")}\nprobe = true')
print(f'kernel = {q(os.path.join(d, fx["kernel"]))}\ninitrd = {q(os.path.join(d, fx["initrd"]))}\nappend = {q(fx["append"])}')
print(f'\n[machine]\narch = {q(fx["arch"])}\nmemory = "1G"\ncpus = 2\n{extra}')
imgs = ", ".join('{ ref = %s, id = %s }' % (q(i["ref"]), q(i["id"])) for i in fx["images"])
print(f'\n[expect]\nengine = {q(fx["engine"])}\nimages = [{imgs}]')
print('containers = [\n  { name = "redis", image = "fixture/redis:1", healthy = true },\n  { name = "web", image = "fixture/busybox:1" },\n]')
print('time_to_stack = "25s"\ntimeout = "45s"')
PY
}

# scenario_variant SCENARIO KEY VALUE OUT: a copy of SCENARIO at OUT with
# `KEY = VALUE` (VALUE is TOML) under [machine], replacing the key if it is
# there. Put OUT beside SCENARIO so that relative image paths still resolve.
scenario_variant() {
    local scenario=$1 key=$2 value=$3 out=$4
    if grep -q "^$key *=" "$scenario"; then
        sed "s|^$key *=.*|$key = $value|" "$scenario" >"$out"
    elif grep -q '^\[machine\]' "$scenario"; then
        sed "s|^\[machine\]|[machine]\n$key = $value|" "$scenario" >"$out"
    else
        { cat "$scenario"; printf '\n[machine]\n%s = %s\n' "$key" "$value"; } >"$out"
    fi
}

# watch_airboot PID: samples airboot (PID) from /proc every 0.2 s until it
# ends, then prints "CPU HWM BOOT_CPU BOOT_S": its CPU seconds over the run
# (user+system, without its children), its peak resident memory (KiB), and
# its CPU seconds and the wall seconds from the start of the watch until
# the last sample at which its QEMU was still running (the guest's run,
# without what airboot does after: the input's hash, the reports).
watch_airboot() {
    local pid=$1 hz cpu=0 hwm=0 bcpu=0 bs=0 c h t0
    hz=$(getconf CLK_TCK)
    t0=$(date +%s.%N)
    while kill -0 "$pid" 2>/dev/null; do
        # airboot may end between kill -0 and a read of /proc: awk then
        # fails, and under set -e that would end this watch with no figures.
        c=$(awk -v hz="$hz" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$pid/stat" 2>/dev/null) || c=""
        h=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || h=""
        [ -n "$c" ] && cpu=$c
        [ -n "$h" ] && hwm=$h
        if [ -n "$c" ] && pgrep -P "$pid" -f qemu-system >/dev/null 2>&1; then
            bcpu=$c
            bs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
        fi
        sleep 0.2
    done
    echo "$cpu $hwm $bcpu $bs"
}

# bench_start NAME FIXTURE: builds airboot (release) and sets $bin, $fx
# (the fixture's build folder) and $work (a working folder in /var/tmp,
# removed on exit together with any process the bench left running).
bench_start() {
    cargo build -q --release -p airboot
    bin=$PWD/target/release/airboot
    fx=$("$bin" images path "$2")
    work=$(mktemp -d "/var/tmp/airboot-bench-$1.XXXXXX")
    # KEEP=1 keeps the working folder (logs, reports) for a look afterwards.
    trap 'pkill -P $$ 2>/dev/null || true; [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"' EXIT
}
