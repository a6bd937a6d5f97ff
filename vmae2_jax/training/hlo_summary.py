"""What an optimised HLO module holds: collectives, loops, custom calls, matmul dtypes.

Read from `compiled.as_text()` (the program after XLA's passes, as the target's
compiler emits it), so it shows what the partitioner and the backend did:
which collectives FSDP became, whether a CPU-only custom call or a host
callback slipped into an accelerator program, and the dtypes the matmuls run in.
"""

from __future__ import annotations

import collections
import re

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "collective-permute", "all-to-all")
# `%name = SHAPE opcode(operands), attributes`; SHAPE may be a tuple holding spaces.
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s([a-z][a-z0-9\-]*)\((.*)$")
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_DTYPE = re.compile(r"([a-z]+[0-9]*)\[")
_OPERAND = re.compile(r"%([\w.\-]+)")
_CALLEE = re.compile(r"\b(?:calls|body|condition|to_apply|branch_computations)=\{?%([\w.\-]+)")
# A conditional's branches: branch_computations={%a, %b} or true_/false_computation=%a.
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}|\b(?:true|false)_computation=%([\w.\-]+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_TRIP_COUNT = re.compile(r'known_trip_count[\\"]*:\{[\\"]*n[\\"]*:[\\"]*(\d+)')
_BODY = re.compile(r"\bbody=%([\w.\-]+)")
_CONDITION = re.compile(r"\bcondition=%([\w.\-]+)")
# Host callbacks: jax.pure_callback/io_callback/debug.print lower to custom calls with
# "callback" in the name (CPU/GPU) or, on TPU, to host send/recv that JAX tags with a
# transfer handler.
_HOST_TRANSFER = re.compile(r'\b(send|recv)\(.*_xla_host_transfer_handler_name="([^"]*)"')
# Multi-slice TPU programs: libtpu compiles one slice's program, whose ICI collectives span
# that slice's chips only; the part of a collective that crosses slices over the data-centre
# network (DCN) is a host send/recv pair handed to the "megascale" runtime, tagged with what
# it does (_xla_megascale_transfer_type="ALL_REDUCE", ...). Those are DCN traffic, not
# callbacks into Python.
MEGASCALE_HANDLER = "xla_megascale_runtime"
_DCN_TYPE = re.compile(r'_xla_megascale_transfer_type="(\w+)"')
# The TPU compiler fuses a collective with the op that produces its input (e.g. the weight
# gradient's matmul) into a kCustom fusion calling a computation named after the collective:
# `%all-reduce-scatter.3` (an all-reduce then this chip's slice: a reduce-scatter). No op
# named reduce-scatter is left, so these are counted from the fusion.
_FUSED = re.compile(r"\bkind=kCustom, calls=%((all-reduce-scatter|all-gather|all-reduce|"
                    r"reduce-scatter|collective-permute|all-to-all)[\w.\-]*)")
_FUSED_KIND = {"all-reduce-scatter": "reduce-scatter"}
_SHAPE = re.compile(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]")
_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s4": 1, "u4": 1, "f8e4m3fn": 1, "f8e5m2": 1,
             "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4,
             "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}


def _bytes(shape: str) -> int:
  """Bytes of the arrays in an HLO shape (a tuple sums its elements; layouts ignored)."""
  total = 0
  for dtype, dims in _SHAPE.findall(re.sub(r"\{[^}]*\}", "", shape)):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _ITEMSIZE.get(dtype, 4)
  return total


def _instructions(hlo: str):
  """(computation, is ROOT, name, result shape, opcode, rest of the line) of each instruction
  of optimised HLO text, in order."""
  current = ""
  for line in hlo.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      c = _COMPUTATION.match(line)
      if c and "=" not in line.split("(")[0]:
        current = c.group(1)
      continue
    yield (current, line.lstrip().startswith("ROOT"), *m.groups())


def _fused_collectives(hlo: str) -> dict[str, str]:
  """{computation called by a kCustom collective fusion: the collective it performs}."""
  return {m.group(1): _FUSED_KIND.get(m.group(2), m.group(2)) for m in _FUSED.finditer(hlo)}


def _collective_ops(hlo: str):
  """(kind, result shape text) of each collective: the ops (an async pair once, with the
  -done op's result, i.e. the output) and the TPU's fused collectives (the fusion's result);
  the ops inside a fused collective's computation are part of it, not counted again."""
  fused = _fused_collectives(hlo)
  for current, _, _, shape, opcode, rest in _instructions(hlo):
    if opcode == "fusion":
      f = _FUSED.search(rest)
      if f:
        yield fused[f.group(1)], shape
      continue
    kind = opcode.removesuffix("-done")
    if kind in COLLECTIVES and current not in fused:
      yield kind, shape


def collectives(hlo: str) -> dict[str, dict]:
  """{kind: {"count", "bytes", "large"}} over the collectives of optimised HLO text, for each
  kind of COLLECTIVES: the TPU's fused reduce-scatters count as "reduce-scatter"; `bytes` sums
  the outputs (per device); `large` counts those over 1 MB (a global norm's scalar
  all-reduces are not FSDP traffic)."""
  out = {k: {"count": 0, "bytes": 0, "large": 0} for k in COLLECTIVES}
  for kind, shape in _collective_ops(hlo):
    n = _bytes(shape)
    out[kind]["count"] += 1
    out[kind]["bytes"] += n
    out[kind]["large"] += n > 1e6
  return out


def summarize(hlo: str) -> dict:
  """Counts over every computation of the module (a loop body's ops are counted once).

  Returns `collectives` {kind: count} and `collective_bytes` {kind: output bytes per device}
  (async -start/-done pairs count once, the TPU's fused reduce-scatters as reduce-scatters:
  `collectives()`),
  `while_loops`, `matmul_loops` (the loops whose body runs dots or convolutions,
  e.g. scanned layers; not the small loops of random sampling) with their
  `trip_counts` (None: unknown), `collective_matmul_loops` (those of them passing data
  around the devices with collective-permutes: XLA's collective matmuls, "windowed
  einsums", which do an FSDP weight's all-gather or its gradient's reduce-scatter piecewise
  beside the matmul), `open_ended_collective_loops` (loops of unknown trip count, e.g. a
  rejection sampler's, that run a collective: each trip waits for every device, and 8
  fake devices deadlocked in such loops on XLA:CPU),
  `conditional_collectives` (conditionals whose branches run a collective: XLA:CPU ran
  those out of order across devices too, issue 19),
  `custom_call_targets` {name: count},
  `host_transfers` (JAX's callback send/recv to the host), `dcn_transfers` and
  `dcn_bytes` {transfer type: count / bytes sent per chip} of a multi-slice program's
  cross-slice traffic (`dcn_transfers()`), and `matmuls` {"result<-operands":
  count} over dot and convolution ops, e.g. "f32<-bf16,bf16" (bf16 inputs, f32
  accumulation).
  """
  matmuls = collections.Counter()
  targets = collections.Counter(_TARGET.findall(hlo))
  dtypes: dict[str, str] = {}
  calls: dict[str, set] = collections.defaultdict(set)
  has_matmul: set = set()
  has_permute: set = set()
  has_collective: set = set()
  pending = []       # (computation, result dtype, operand names) of each dot/convolution
  loops = []         # (body, known trip count, condition, initial tuple) of each while
  branches = []      # the branch computations of each conditional
  host = 0
  constants: dict[str, int] = {}   # integer scalar constants
  limits: dict[str, list] = {}     # loop condition -> operands of its ROOT `i < n`
  defs: dict[str, tuple] = {}      # name -> (opcode, operands, tuple index) of small ops
  roots: dict[str, str] = {}       # computation -> its ROOT instruction
  for current, is_root, name, shape, opcode, rest in _instructions(hlo):
    result = _DTYPE.search(shape)
    dtypes[name] = result.group(1) if result and not shape.startswith("(") else "tuple"
    calls[current].update(_CALLEE.findall(rest))
    if is_root:
      roots[current] = name
    if opcode in ("tuple", "get-tuple-element", "add", "copy"):
      index = re.search(r"\bindex=(\d+)", rest)
      defs[name] = (opcode, _OPERAND.findall(rest.split(")")[0]),
                    int(index.group(1)) if index else None)
    if opcode.endswith("-done"):
      continue
    if opcode.startswith("collective-permute"):
      has_permute.add(current)
    if opcode.removesuffix("-start") in COLLECTIVES or _FUSED.search(rest):
      has_collective.add(current)
    if opcode in ("dot", "convolution"):
      has_matmul.add(current)
      pending.append((dtypes[name], _OPERAND.findall(rest.split(")")[0])))
    elif opcode == "conditional":
      found = [n for group, one in _BRANCHES.findall(rest)
               for n in (_OPERAND.findall(group) if group else [one])]
      calls[current].update(found)
      branches.append(found)
    elif opcode == "while":
      t, body, cond = _TRIP_COUNT.search(rest), _BODY.search(rest), _CONDITION.search(rest)
      init = _OPERAND.findall(rest.split(")")[0])
      loops.append((body.group(1) if body else "", int(t.group(1)) if t else None,
                    cond.group(1) if cond else "", init[0] if init else ""))
    elif opcode == "constant" and re.match(r"[su]\d+\[\]", shape) and re.match(r"-?\d+\)", rest):
      constants[name] = int(rest.split(")")[0])
    elif opcode == "compare" and is_root and "direction=LT" in rest:
      limits[current] = _OPERAND.findall(rest.split(")")[0])
    transfer = _HOST_TRANSFER.search(f"{opcode}({rest}")
    if transfer and transfer.group(2) != MEGASCALE_HANDLER:
      host += 1
  for result, operands in pending:
    matmuls[f"{result}<-{','.join(dtypes.get(o, '?') for o in operands)}"] += 1

  def runs(ops, comp, seen=()):
    if comp in ops:
      return True
    return any(runs(ops, c, seen + (comp,)) for c in calls.get(comp, ()) if c not in seen)

  def element(tuple_name, k):
    d = defs.get(tuple_name)
    return d[1][k] if d and d[0] == "tuple" and k < len(d[1]) else None

  def constant(name):
    while name in defs and defs[name][0] == "copy":
      name = defs[name][1][0]
    return constants.get(name)

  def trip_count(known, cond, body, init):
    """XLA's known_trip_count, else `i < N` in the condition, with i's start in the loop's
    initial tuple and its step in the body's `i + c` (scan counts from 0 by 1; XLA's
    collective matmul loops may count by 2)."""
    if known is not None:
      return known
    operands = limits.get(cond, ())
    if len(operands) != 2 or constant(operands[1]) is None:
      return None
    counter, limit = defs.get(operands[0]), constant(operands[1])
    start, step = 0, 1
    if counter and counter[0] == "get-tuple-element":
      k = counter[2]
      start = constant(element(init, k)) or 0
      update = defs.get(element(roots.get(body, ""), k))
      if update and update[0] == "add":  # i + c
        steps = [c for c in map(constant, update[1]) if c is not None]
        step = steps[0] if len(steps) == 1 and steps[0] > 0 else 1
    return max(0, -(-(limit - start) // step))

  heavy = [(trip_count(trip, cond, body, init), runs(has_permute, body))
           for body, trip, cond, init in loops if runs(has_matmul, body)]
  # Loops that run until a condition holds (rejection sampling, say) and run a
  # collective: split over devices, their condition waits for every device's data.
  open_ended = sum(1 for body, trip, cond, init in loops
                   if trip_count(trip, cond, body, init) is None
                   and (runs(has_collective, cond) or runs(has_collective, body)))
  branching = sum(1 for found in branches if any(runs(has_collective, b) for b in found))
  counted = collectives(hlo)
  dcn = dcn_transfers(hlo)
  return {
      "collectives": {k: v["count"] for k, v in counted.items()},
      "collective_bytes": {k: v["bytes"] for k, v in counted.items()},
      "dcn_transfers": {k: v["count"] for k, v in dcn.items()},
      "dcn_bytes": {k: v["bytes"] for k, v in dcn.items()},
      "while_loops": len(loops),
      "matmul_loops": len(heavy),
      "trip_counts": [t for t, _ in heavy],
      "collective_matmul_loops": sum(p for _, p in heavy),
      "open_ended_collective_loops": open_ended,
      "conditional_collectives": branching,
      "custom_call_targets": dict(targets),
      "host_transfers": host,
      "matmuls": dict(matmuls),
  }


def dcn_transfers(hlo: str) -> dict[str, dict]:
  """{transfer type, e.g. "ALL_REDUCE": {"count", "bytes"}} over the cross-slice (DCN) parts
  of a multi-slice TPU program's collectives: one per megascale send (its recv is the other
  half of the same transfer); `bytes` sums the data each chip sends into them (the send's
  first operand, in libtpu's DCN buffer layout). Empty for a single-slice program."""
  out: dict[str, dict] = {}
  for _, _, _, shape, opcode, rest in _instructions(hlo):
    if opcode != "send":
      continue
    transfer = _HOST_TRANSFER.search(f"send({rest}")
    if not transfer or transfer.group(2) != MEGASCALE_HANDLER:
      continue
    kind = _DCN_TYPE.search(rest)
    entry = out.setdefault(kind.group(1) if kind else "?", {"count": 0, "bytes": 0})
    first = _SHAPE.search(re.sub(r"\{[^}]*\}", "", shape))
    entry["count"] += 1
    entry["bytes"] += _bytes(first.group(0)) if first else 0
  return out


def host_callbacks(summary: dict) -> list[str]:
  """The custom calls and host transfers through which a program calls back into Python."""
  found = [t for t in summary["custom_call_targets"] if "callback" in t.lower()]
  if summary["host_transfers"]:
    found.append(f"{summary['host_transfers']} host send/recv")
  return found


def collective_shapes(hlo: str, kind: str) -> list[list[tuple[int, ...]]]:
  """Per `kind` collective (e.g. "reduce-scatter", the TPU's fused ones included; as
  `collectives()` counts them), the dims of each array it produces (XLA combines several
  into one op with a tuple result)."""
  return [[tuple(int(d) for d in dims.split(",") if d)
           for _, dims in _SHAPE.findall(re.sub(r"\{[^}]*\}", "", shape))]
          for k, shape in _collective_ops(hlo) if k == kind]
