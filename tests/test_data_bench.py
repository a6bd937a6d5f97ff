"""The data benchmark runs end to end and ends with the JSON line the trainer docs quote."""

from __future__ import annotations

import json

from vmae2_jax.bench import data_bench


def test_data_bench_smoke(capsys):
  argv = ["data", "--json", "--short_side=64", "--size=32", "--frames=4", "--seconds=0",
          "--batches=1", "--decode_clips=2"]
  assert data_bench.main(argv) == 0
  last = capsys.readouterr().out.strip().splitlines()[-1]
  result = json.loads(last)
  for key in ("pretrain_clips_per_s_per_core", "finetune_clips_per_s_per_core",
              "speedup_vs_decode", "speedup_vs_decode_only", "decode_clips_per_s_per_core"):
    assert result[key] > 0, key
  assert result["size"] == 32 and result["frames"] == 4
