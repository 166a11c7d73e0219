#!/usr/bin/env bash
# The test suite: set everything up, build the fixtures (cached in
# ~/.cache/airboot, keyed by their inputs), then run every test, including
# real boots under QEMU of the representative scenario set (`suite = "ci"`;
# AIRBOOT_SUITE=full adds the rest). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo
echo "== building airboot and the fixtures"
cargo build -q --locked -p airboot
./target/debug/airboot images build --for scenarios/ --suite "${AIRBOOT_SUITE:-ci}"
# harness/cli/tests/cut.rs also cuts the crash-safe fixture (its write-without-flush control).
./target/debug/airboot images build debian-load-at-boot-safe-x86_64
echo
echo "== cargo test"
exec cargo test --locked --workspace "$@"
