#!/usr/bin/env bash
# The whole progressive pipeline on the embedded demo data, on CPU, in minutes:
#
#   launch/demo.sh [OUT]        (OUT defaults to /tmp/vmae2_demo_pipeline)
#
#   1. pre-train       configs/demo.py: masked video modelling, Ti/16 on 8x64x64 clips of
#                      demo:train (labels unused)                          -> OUT/pretrain
#   2. post-pre-train  configs/postpretrain_demo.py: supervised, the 4 motion directions of
#                      demo:motion_train, from OUT/pretrain                -> OUT/postpretrain
#   3. fine-tune       configs/finetune_demo.py: the same labels at a lower lr with mixup,
#                      from OUT/postpretrain (the head carries over)       -> OUT/finetune
#   4. multi-view test on demo:motion_val, run at the end of fine-tuning   -> OUT/finetune/test_step<N>_2x2
#   5. predict one mp4 the model has not seen (a generated clip drifting right) -> top-3 classes
#   6. extract per-window features of demo:motion_val                     -> OUT/features/*.npy
#
# The demo has no separate merged labelled set (the reference post-pre-trains on K710 and
# fine-tunes on K400, a subset of its classes): both supervised stages train on the clips of
# demo:motion_train (shapes drifting left/right/up/down: only motion tells the classes apart),
# fine-tuning at a quarter of the post-pre-training lr, which is how K400 follows K710 when
# the label sets coincide. Each stage starts from the previous stage's workdir
# (its final step). Rerunning with the same OUT resumes unfinished stages and reuses
# finished ones (said in their banner; delete OUT/<stage> to redo one). When README
# command 1 has run (a finished configs/demo.py run in $DEMO_PRETRAIN, default
# /tmp/vmae2_demo) and OUT has no pre-training yet, that run is the pre-training.
# The last line is "final multi-view top-1: XX.X%" from OUT/finetune/summary.json.
set -euo pipefail

OUT="${1:-/tmp/vmae2_demo_pipeline}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# $PYTHON, else the repository's .venv when there is one, else python on the PATH.
if [[ -z "${PYTHON:-}" ]]; then
  PYTHON=python
  [[ -x "$ROOT/.venv/bin/python" ]] && PYTHON="$ROOT/.venv/bin/python"
fi
cd "$ROOT"
mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Training logs go to OUT/<stage>.log; the terminal shows the banners and results.
T0=$SECONDS
banner() { echo "=== [$((SECONDS - T0))s] $*"; }
finished() {  # workdir: its run reached its last step (summary.json, config.json agree)
  "$PYTHON" - "$1" <<'EOF' 2>/dev/null
import json, os, sys
d = sys.argv[1]
s = json.load(open(os.path.join(d, "summary.json")))
c = json.load(open(os.path.join(d, "config.json")))
sys.exit(0 if "preempted_at" not in s and c["total_steps"] and s["final_step"] == c["total_steps"]
         else 1)
EOF
}
run_stage() {  # name, config, extra flags...
  local name="$1" config="$2"
  shift 2
  if finished "$OUT/$name"; then
    echo "    reusing $OUT/$name: finished earlier (delete it to run this stage again)"
  elif ! "$PYTHON" -m vmae2_jax.main --config="$config" --workdir="$OUT/$name" "$@" \
      >"$OUT/$name.log" 2>&1; then
    tail -n 20 "$OUT/$name.log" >&2
    echo "error: $name failed; full log: $OUT/$name.log" >&2
    exit 1
  fi
  "$PYTHON" - "$OUT/$name/summary.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
parts = [f"step {s['final_step']}"]
if s.get("last"):
  parts.append(f"loss {s['last']['loss']:.4f}")
if "best_val_top1" in s:
  parts.append(f"best val top-1 {s['best_val_top1']:.1f}% (step {s['best_step']})")
if "test_top1" in s:
  parts.append(f"multi-view test top-1 {s['test_top1']:.1f}%")
print("    " + ", ".join(parts))
EOF
}

DEMO_PRETRAIN="${DEMO_PRETRAIN:-/tmp/vmae2_demo}"
PRETRAIN="$OUT/pretrain"
same_as_demo() {  # workdir: pre-trained with configs/demo.py's model and clip shape
  "$PYTHON" - "$1" <<'EOF' 2>/dev/null
import json, os, sys
from configs import demo
c, d = json.load(open(os.path.join(sys.argv[1], "config.json"))), demo.get_config()
sys.exit(0 if (c["stage"], c["model"]["variant"], c["data"]["frames"], c["data"]["image_size"])
         == (d.stage, d.model.variant, d.data.frames, d.data.image_size) else 1)
EOF
}
if [[ ! -e "$PRETRAIN" ]] && finished "$DEMO_PRETRAIN" && same_as_demo "$DEMO_PRETRAIN"; then
  PRETRAIN="$DEMO_PRETRAIN"
  banner "1/6 pre-train: README command 1's run in $PRETRAIN is the pre-training (reused)"
else
  banner "1/6 pre-train: Ti/16, 8x64x64, demo:train -> $OUT/pretrain"
  run_stage pretrain configs/demo.py
fi

banner "2/6 post-pre-train: 4 motion directions of demo:motion_train, from $PRETRAIN -> $OUT/postpretrain"
run_stage postpretrain configs/postpretrain_demo.py --config.init_from="$PRETRAIN"

banner "3/6 fine-tune: same classes, lower lr, from $OUT/postpretrain -> $OUT/finetune"
run_stage finetune configs/finetune_demo.py --config.init_from="$OUT/postpretrain"

banner "4/6 multi-view test on demo:motion_val (end of fine-tuning)"
"$PYTHON" - "$OUT/finetune/summary.json" <<'EOF'
import csv, json, os, sys
s = json.load(open(sys.argv[1]))
m = json.load(open(os.path.join(s["test_dir"], "metrics.json")))
print(f"    {m['num_videos']} videos x {s['test_views']} views: top-1 {m['top1']:.1f}%, "
      f"top-5 {m['top5']:.1f}%; report in {s['test_dir']}")
with open(os.path.join(s["test_dir"], "per_class.csv"), newline="") as f:
  rows = [r for r in csv.DictReader(f) if int(r["videos"])]
print("    per class: " + ", ".join(f"{r['name']} {float(r['top1']):.0f}%" for r in rows))
EOF

banner "5/6 predict one video with the fine-tuned model"
# A clip the model has never seen (another generator seed), written as an mp4 file as a
# user's video would be: shapes drifting right.
VIDEO="$OUT/right_drift.mp4"
"$PYTHON" -c "
import sys
from data_prep.generated import motion_clip, write_mp4
write_mp4(sys.argv[1], motion_clip(1, 0, frames=24, size=64, seed=99, speed=(0.5, 1.3), noise=1.0))
" "$VIDEO"
echo "    $VIDEO (shapes drifting right)"
"$PYTHON" -m vmae2_jax.predict --init_from="$OUT/finetune" --video="$VIDEO" --top=3

banner "6/6 extract per-window features of demo:motion_val -> $OUT/features"
"$PYTHON" -m vmae2_jax.extract --init_from="$OUT/finetune" --videos=demo:motion_val \
    --out="$OUT/features" --window=8 --stride=8 --size=64 --no_progress
"$PYTHON" - "$OUT/features" <<'EOF'
import os, sys
import numpy as np
files = sorted(f for f in os.listdir(sys.argv[1]) if f.endswith(".npy"))
shape = np.load(os.path.join(sys.argv[1], files[0])).shape if files else None
print(f"    {len(files)} feature files, e.g. {files[0] if files else '-'}: {shape} (windows, dim)")
EOF

banner "done in $((SECONDS - T0))s"
"$PYTHON" -c "
import json, sys
print(f'final multi-view top-1: {json.load(open(sys.argv[1]))[\"test_top1\"]:.1f}%')
" "$OUT/finetune/summary.json"
