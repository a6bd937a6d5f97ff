"""`python -m vmae2_jax.bench [SUBCOMMAND] ...`: every benchmark of this project.

  step         (default) a stage's train step: clips/s, TFLOP/s, MFU
  data         the input pipelines against decoding mp4 at read time
  ava_data     AVA detection pipelines: keyframe shard size, train and test keyframes/s
  hf           pre-training step side by side with Hugging Face VideoMAEForPreTraining
  hf_finetune  fine-tuning step, multi-view inference and features side by side with
               Hugging Face VideoMAEForVideoClassification
  kernels      the CPU kernels (attention, weight gradient) as a fraction of FMA peak
  memory       per-device memory of a config's step from compile-only runs on fake devices
  aot          a stage's step compiled for a TPU pod by libtpu, without one (HBM, FLOPs,
               compiler-estimated MFU, collectives; the `aot` extra)
  gpu          ViT-g/14 pre-training step on one GPU at a few batch sizes (MFU)
  learning     pre-trained vs from-scratch fine-tuning on generated motion clips (accuracy)
  storage      checkpoint save/restore and shard reads: a local folder against a bucket

`python -m vmae2_jax.bench SUBCOMMAND --help` for each one's flags. Each
module is imported only when asked for: `memory`, `aot` and `gpu` set environment
variables that must precede JAX's start.
"""

import importlib
import importlib.util
import sys

SUBCOMMANDS = {
    "step": "train_bench",
    "data": "data_bench",
    "ava_data": "ava_data",
    "hf": "hf_pretrain",
    "hf_finetune": "hf_finetune",
    "kernels": "kernels",
    "memory": "memory",
    "aot": "aot",
    "gpu": "gpu",
    "learning": "learning",
    "storage": "storage",
}
# Side-by-side benchmarks run Hugging Face's torch models (the `bench` extra).
NEEDS = {"hf": ("torch", "transformers"), "hf_finetune": ("torch", "transformers")}


def _missing(modules) -> list[str]:
  out = []
  for m in modules:
    try:
      found = importlib.util.find_spec(m) is not None
    except ValueError:  # sys.modules[m] is None: import blocked
      found = False
    if not found:
      out.append(m)
  return out


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  name = "step"
  if argv and not argv[0].startswith("-"):
    name = argv.pop(0)
    if name not in SUBCOMMANDS:
      print(f"unknown subcommand {name!r}; choose one of {', '.join(SUBCOMMANDS)}\n\n{__doc__}",
            file=sys.stderr)
      return 2
  elif argv and argv[0] in ("-h", "--help") and len(argv) == 1:
    print(__doc__)
  missing = _missing(NEEDS.get(name, ()))
  if missing:
    print(f"error: `bench {name}` runs Hugging Face's torch model beside ours and needs "
          f"{' and '.join(missing)}: pip install -e '.[bench]'", file=sys.stderr)
    return 2
  module = importlib.import_module(f"vmae2_jax.bench.{SUBCOMMANDS[name]}")
  return module.main(argv)


if __name__ == "__main__":
  sys.exit(main())
