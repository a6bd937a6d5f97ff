"""ViT-g/14 pre-training step on one GPU (MFU): a launcher for `python -m vmae2_jax.bench gpu`.

  python benchmarks/gpu_vit_g.py [--runs=full:32,full:96,dots:32] [...]

Prints one line per run and, last, `GPU_VIT_G_JSON {...}`; see
vmae2_jax/bench/gpu.py for the flags and what is measured.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vmae2_jax.bench import gpu  # noqa: E402  (after the path)

if __name__ == "__main__":
  sys.exit(gpu.main(sys.argv[1:]))
