#!/usr/bin/env bash
# The test suite: set everything up, build the fixtures (cached in
# ~/.cache/airboot, keyed by their inputs), then run every test, including
# real boots under QEMU of the representative scenario set (`suite = "ci"`;
# AIRBOOT_SUITE=full adds the rest). Extra arguments go to `cargo test`.
#
# On a fresh machine the slow parts overlap: while the fixtures build (mostly
# mmdebstrap and dpkg, one core), vhost-device-vsock is installed and the
# test binaries compile in the background; their output is shown after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --skip-helper
echo
echo "== building airboot"
cargo build -q --locked -p airboot
log=$(mktemp)
(
    bash scripts/setup.sh --helper-only
    echo "== compiling the tests"
    cargo test -q --locked --workspace --no-run "$@"
) >"$log" 2>&1 &
bg=$!
trap 'kill $bg 2>/dev/null || true; rm -f "$log"' EXIT
echo "== building the fixtures (vhost-device-vsock and the tests build beside them)"
./target/debug/airboot images build --for scenarios/ --suite "${AIRBOOT_SUITE:-ci}"
# harness/cli/tests/cut.rs also cuts the crash-safe fixture (its write-without-flush control).
./target/debug/airboot images build debian-load-at-boot-safe-x86_64
st=0
wait $bg || st=$?
cat "$log"
[ "$st" = 0 ] || { echo "test.sh: installing vhost-device-vsock or compiling the tests failed (above)" >&2; exit "$st"; }
trap - EXIT
rm -f "$log"
echo
echo "== cargo test"
exec cargo test --locked --workspace "$@"
