#!/usr/bin/env bash
# The demo: set everything up, then run the built-in default scenario (the
# preseeded x86_64 fixture, built on first use) and show where the report is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --release
echo
echo "== airboot run (built-in default scenario)"
exec ./target/release/airboot run "$@"
