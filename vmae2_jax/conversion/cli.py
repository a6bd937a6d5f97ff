"""Command line of `python -m vmae2_jax.convert` (import by default, export with --to)."""

from __future__ import annotations

import argparse
import sys

from vmae2_jax import paths
from vmae2_jax.conversion import api
from vmae2_jax.conversion.report import ConversionError

USAGE = """\
import:  python -m vmae2_jax.convert --src=FILE_OR_HF_DIR --dst=DIR [--variant=g/14]
             [--kind=auto|pretrain|classifier|encoder] [--num_classes=K] [--label_map=710to400]
export:  python -m vmae2_jax.convert --to=official|hf --src=DIR|WORKDIR[/best] --dst=FILE(.pth|.bin|.safetensors)
"""


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m vmae2_jax.convert", usage=USAGE,
                              description="Converts VideoMAE (V2) checkpoints to and from "
                                          "vmae2_jax model-only Orbax checkpoints.")
  p.add_argument("--src", required=True, help="PyTorch file / HF folder (import); a converted DIR or a "
                                              "training run WORKDIR, WORKDIR/best or a step (export)")
  p.add_argument("--dst", required=True, help="our DIR (import) or a PyTorch file (export)")
  p.add_argument("--to", choices=("official", "hf"), default=None,
                 help="export to the reference (official) or Hugging Face layout")
  p.add_argument("--variant", default=None, help="model size (S/16 ... g/14); inferred if unset")
  p.add_argument("--kind", default="auto", choices=("auto", "pretrain", "classifier", "encoder"),
                 help="what to write; 'classifier' on a pre-training file drops the decoder "
                      "and creates a fresh head (needs --num_classes)")
  p.add_argument("--num_classes", type=int, default=None)
  p.add_argument("--label_map", default=None,
                 help="re-index a classifier head: 710to400 | 710to600 | 710to700 | FILE.json")
  p.add_argument("--frames", type=int, default=None, help="recorded in model.json (default 16)")
  p.add_argument("--image_size", type=int, default=None, help="recorded in model.json (224)")
  p.add_argument("--dtype", default="float32", choices=("float32", "float16", "keep"))
  p.add_argument("--zero_bias", default="warn", choices=("warn", "error"),
                 help="what to do when every q/v bias is zero (a dropped-bias converter bug)")
  p.add_argument("--seed", type=int, default=0, help="seed of a fresh classifier head")
  p.add_argument("--hf_bias_layout", default="current", choices=("current", "legacy"),
                 help="HF export: query.bias/value.bias (transformers >= 5) or q_bias/v_bias")
  p.add_argument("--no_hf_config", action="store_true",
                 help="HF export: do not write config.json beside the file")
  p.add_argument("-v", "--verbose", action="store_true", help="print the full tensor report")
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)
  try:
    if args.to:
      meta = api.export_checkpoint(args.src, args.dst, args.to,
                                   hf_bias_layout=args.hf_bias_layout,
                                   hf_config=not args.no_hf_config, progress=True)
      print(f"wrote {args.dst} ({args.to} layout, {meta['kind']} {meta['variant']})")
      return 0
    paths.check_native(args.dst, "--dst", "Orbax writes the converted checkpoint")
    rep = api.convert_file(
        args.src, args.dst, variant=args.variant, kind=args.kind, num_classes=args.num_classes,
        label_map=args.label_map, frames=args.frames, image_size=args.image_size, dtype=args.dtype,
        zero_bias=args.zero_bias, seed=args.seed, progress=True)
    print(rep.full_text() if args.verbose else rep.summary())
    print(f"wrote {paths.resolve(args.dst)} (report: {api.REPORT_FILE})")
    return 0
  except (ConversionError, FileNotFoundError, ValueError, paths.PathAccessError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
