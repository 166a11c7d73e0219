#!/usr/bin/env bash
# Judge one shard of an exploration from a shipped recording: what each
# pod of the Kubernetes Indexed Job (docs/examples/explore-indexed-job.yaml)
# and each leg of the CI matrix (docs/examples/explore-matrix.yml) runs.
#
#   SHARDS=N [SHARD=K | JOB_COMPLETION_INDEX=K-1] \
#     bash scripts/explore-shard.sh SCENARIO RECORDING OUT [airboot cut options...]
#
# SCENARIO   the exploration's scenario (points = "all")
# RECORDING  the record/ folder of `airboot cut SCENARIO --record-only`
#            (writes.log, recording.json), copied whole; the input image
#            must be where recording.json says, with the same sha256
# OUT        shard K's report goes to OUT/shard-K
# The shard number is SHARD (1..N), else Kubernetes' JOB_COMPLETION_INDEX
# (0..N-1) plus one. Exit status: airboot cut's (0, 1, 2).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 3 ] || [ -z "${SHARDS:-}" ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
scenario=$1 recording=$2 out=$3
shift 3
if [ -n "${SHARD:-}" ]; then
    k=$SHARD
elif [ -n "${JOB_COMPLETION_INDEX:-}" ]; then
    k=$((JOB_COMPLETION_INDEX + 1))
else
    echo "error: set SHARD (1..$SHARDS) or JOB_COMPLETION_INDEX (0..$((SHARDS - 1)))" >&2
    exit 2
fi
bin=${AIRBOOT:-./target/debug/airboot}
exec "$bin" cut "$scenario" --recording "$recording" --shard "$k/$SHARDS" --report-dir "$out/shard-$k" "$@"
