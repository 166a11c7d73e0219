#!/usr/bin/env bash
# Benchmark: how the guest's vCPU count changes boot time on this host
# (`cpus = 1` against `cpus = 2`, interleaved; see bench-machine.sh).
#
#   bash scripts/bench-cpus.sh [SCENARIO] [ROUNDS]
#   (default scenarios/preseeded-x86_64.toml, 3 rounds: about 15 min on TCG)
exec "$(dirname "$0")/bench-machine.sh" cpus 1 2 "$@"
