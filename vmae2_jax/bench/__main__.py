"""`python -m vmae2_jax.bench [SUBCOMMAND] ...`: every benchmark of this project.

  step         (default) a stage's train step: clips/s, TFLOP/s, MFU
  data         the input pipelines against decoding mp4 at read time
  hf           pre-training step side by side with Hugging Face VideoMAEForPreTraining
  hf_finetune  fine-tuning step, multi-view inference and features side by side with
               Hugging Face VideoMAEForVideoClassification
  memory       per-device memory of a config's step from compile-only runs on fake devices
  gpu          ViT-g/14 pre-training step on one GPU at a few batch sizes (MFU)
  learning     pre-trained vs from-scratch fine-tuning on generated motion clips (accuracy)

`python -m vmae2_jax.bench SUBCOMMAND --help` for each one's flags. Each
module is imported only when asked for: `memory` and `gpu` set environment
variables that must precede JAX's start.
"""

import importlib
import sys

SUBCOMMANDS = {
    "step": "train_bench",
    "data": "data_bench",
    "hf": "hf_pretrain",
    "hf_finetune": "hf_finetune",
    "memory": "memory",
    "gpu": "gpu",
    "learning": "learning",
}


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
  module = importlib.import_module(f"vmae2_jax.bench.{SUBCOMMANDS[name]}")
  return module.main(argv)


if __name__ == "__main__":
  sys.exit(main())
