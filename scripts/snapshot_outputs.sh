#!/usr/bin/env bash
# Run every sandbox experiment, and the three REC experiments + the REC table on RefCOCO-format fixtures
# of sandbox scenes, into OUTDIR: tables, per-item predictions and the console output (normalised: the
# output folder becomes OUT, transformers' weight-loading bar is dropped). Sidecars (.json) hold
# timestamps and are left out of comparisons.
#
# Check that a refactor changes no output: run it at two commits and diff the folders, e.g.
#   git stash; scripts/snapshot_outputs.sh /tmp/before; git stash pop
#   scripts/snapshot_outputs.sh /tmp/after
#   diff -r --exclude='*.json' --exclude='*.lock' /tmp/before /tmp/after && echo identical
set -euo pipefail
OUT=$(realpath -m "${1:?usage: scripts/snapshot_outputs.sh OUTDIR}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
mkdir -p "$OUT"
export FALIP_CACHE=$OUT/.cache HF_HUB_OFFLINE=1
FIXTURE=$OUT/.fixture
run() {  # run NAME ARGS...: falip-run ARGS, console output normalised into OUT/NAME.stdout
  local name=$1; shift
  (cd "$REPO" && "$PY" -m falip.cli "$@" run.progress=false 2>&1) | grep -v "Loading weights" | sed "s#$OUT#OUT#g" > "$OUT/$name.stdout"
}
"$PY" - "$FIXTURE" <<'PY'
import sys
from pathlib import Path
from falip.sandbox.datasets import write_shapes_rec
root = Path(sys.argv[1])
for name, split_by, seed, splits in [("refcoco", "unc", 5, {"val": 3, "testA": 2, "testB": 4}),
                                     ("refcoco+", "unc", 6, {"val": 3, "testA": 2, "testB": 4}),
                                     ("refcocog", "umd", 7, {"val": 3, "test": 2})]:
    write_shapes_rec(root / name, seed=seed, scenes_per_split=8, width=96, height=80, splits=splits,
                     dataset_dir=name, split_by=split_by, file_pattern="COCO_train2014_{:012d}.jpg")
PY
for experiment in shapes_rec shapes_cls shapes_ablation; do
  run "$experiment" experiment=$experiment run.output_dir="$OUT/results"
done
run shapes_cls_limited experiment=shapes_cls run.limit=50 run.skip_bad_samples=true run.output_dir="$OUT/limited"
for pair in refcoco_rec:refcoco refcocop_rec:refcoco+ refcocog_rec:refcocog; do
  run "${pair%%:*}" experiment=${pair%%:*} model=sandbox dataset.root="$FIXTURE/${pair#*:}" run.output_dir="$OUT/results"
done
run rec_table experiment=rec_table run.output_dir="$OUT/results"
rm -rf "$OUT/.cache" "$OUT/.fixture"
echo "wrote $OUT"
