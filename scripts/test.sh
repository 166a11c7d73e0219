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
echo
echo "== cargo test"
exec cargo test --locked --workspace "$@"
