"""Where the CPU time of the multi-view test forward goes, per kind of op (issue 18).

A thin measuring script for tuning: it compiles the evaluator's prediction
(`Experiment.predict_fn`: uint8 views -> log-softmax scores) for `--views` views
of a config's model, traces one call with jax.profiler and sums the traced time
of the program's top-level ops by what they compute: the fused attention kernel,
dots (with what XLA fused into them), GELU (erf), layer-norm reductions,
transposes and copies (the patch cut), parameter slices, and the rest.

  JAX_PLATFORMS=cpu python benchmarks/cpu_forward_profile.py --views=3 \\
      [--config=configs/finetune_s_k400.py] [--xla_defaults]

--xla_defaults compiles with XLA's default options instead of the forward's own
(`models.platform.forward_compiler_options`), to see what they change. Op times
are wall-clock inside the trace: on a loaded machine they stretch with the load,
so compare shares, not milliseconds, across runs. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile
import time


def categories(hlo: str) -> dict[str, str]:
  """Top-level (ENTRY) op name -> category, from the opcodes of what each op calls."""
  comps: dict[str, list[str]] = {}
  current = None
  for line in hlo.splitlines():
    m = re.match(r"^(?:ENTRY )?%(\S+) ", line)
    if m:
      current = m.group(1)
      comps[current] = []
    elif current and line.startswith("  "):
      comps[current].append(line)
  entry = re.search(r"^ENTRY %(\S+) ", hlo, re.M).group(1)

  def opcodes(lines, seen):
    out = set()
    for line in lines:
      m = re.search(r"= \S+ ([\w-]+)\(", line)
      if m:
        out.add(m.group(1))
      if "custom_call_target=" in line:
        out.add(re.search(r'custom_call_target="([^"]+)"', line).group(1))
      for c in re.findall(r"(?:calls|to_apply)=%([\w.-]+)", line):
        if c not in seen:
          seen.add(c)
          out |= opcodes(comps.get(c, []), seen)
    return out

  cats = {}
  for line in comps[entry]:
    m = re.match(r"\s+%(\S+) = ", line)
    if not m:
      continue
    ops = opcodes([line], set())
    if any(o.startswith("vmae2_cpu") for o in ops):
      cat = "attention kernel"
    elif "dot" in ops or "convolution" in ops:
      cat = "dot" + (" + fused GELU" if "erf" in ops else "") + (
          " + fused reduction (layer norm)" if "reduce" in ops else "")
    elif "erf" in ops:
      cat = "GELU (erf)"
    elif "reduce" in ops:
      cat = "reductions (layer norm, token mean)"
    elif "transpose" in ops or "copy" in ops:
      cat = "transposes / copies"
    elif ops & {"slice", "dynamic-slice"}:
      cat = "parameter slices"
    elif "broadcast" in ops and len(ops - {"broadcast", "fusion", "constant"}) == 0:
      cat = "materialised broadcasts"
    else:
      cat = "other element-wise"
    cats[m.group(1)] = cat
  return cats


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="configs/finetune_s_k400.py")
  p.add_argument("--views", type=int, default=3)
  p.add_argument("--xla_defaults", action="store_true")
  a = p.parse_args(argv)

  import jax

  from vmae2_jax.bench.common import load_config, random_videos, without_data
  from vmae2_jax.training.experiment import setup

  config = without_data(load_config(a.config), clips=1)
  config.mesh = {"data": 1, "fsdp": -1, "tensor": 1}
  exp = setup(config, jax.devices()[:1])
  params = exp.init_state().params
  d = config.data
  x = jax.device_put(random_videos(a.views, d.frames, d.image_size, seed=1),
                     exp.batch_sharding(5))
  predict = exp.predict_fn
  if a.xla_defaults:  # the same forward, jitted without the forward's compiler options
    predict = jax.jit(lambda p, v: exp.task.predict(p, exp.graphdef, v))
  fn = predict.lower(params, x).compile()
  jax.block_until_ready(fn(params, x))  # warm
  t0, c0 = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(params, x))
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0

  cats = categories(fn.as_text())
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      jax.block_until_ready(fn(params, x))
    trace = json.load(gzip.open(glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)[0]))
  events = trace["traceEvents"] if isinstance(trace, dict) else trace
  total, count = collections.Counter(), collections.Counter()
  for e in events:
    if e.get("ph") == "X" and e.get("name") in cats:
      total[cats[e["name"]]] += e["dur"] / 1e3
      count[cats[e["name"]]] += 1
  summed = sum(total.values())
  print(f"{a.views} views of ViT-{config.model.variant} {d.frames}x{d.image_size}^2, "
        f"{'XLA defaults' if a.xla_defaults else 'forward options'}: untraced call "
        f"{wall:.2f} s wall, {cpu:.2f} CPU s; traced ops {summed:.0f} ms")
  for cat, ms in total.most_common():
    print(f"  {cat:45s} {ms:8.0f} ms {100 * ms / summed:5.1f}%  ({count[cat]} ops)")
  print(json.dumps({"views": a.views, "xla_defaults": a.xla_defaults, "wall_s": wall,
                    "cpu_s": cpu, "ops_ms": dict(total)}))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
