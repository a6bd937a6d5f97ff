"""Checkpoint conversion: PyTorch VideoMAE (V2) files in, reference/HF files out.

  python -m vmae2_jax.convert --src=vit_g_hybrid_pt_1200e.pth --dst=ckpt/g_pt
  python -m vmae2_jax.convert --to=official --src=ckpt/g_pt --dst=g_pt.pth

In Python:
  model = vmae2_jax.convert.load("vit_s_k710_dl_from_giant.pth")   # or a converted DIR
  logits = vmae2_jax.convert.reference_forward(model, video_b3thw)

See docs/checkpoints.md for every published checkpoint.
"""

from vmae2_jax.conversion.api import (build_model, convert_file, export_checkpoint,
                                      export_params, import_checkpoint, load)
from vmae2_jax.conversion.init_from import apply_init_from
from vmae2_jax.conversion.parity import reference_forward
from vmae2_jax.conversion.report import ConversionError, ConversionReport

__all__ = [
    "ConversionError", "ConversionReport", "apply_init_from", "build_model", "convert_file",
    "export_checkpoint", "export_params", "import_checkpoint", "load", "reference_forward",
]

if __name__ == "__main__":
  import sys

  from vmae2_jax.conversion.cli import main
  sys.exit(main())
