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
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_TRIP_COUNT = re.compile(r'known_trip_count[\\"]*:\{[\\"]*n[\\"]*:[\\"]*(\d+)')
_BODY = re.compile(r"\bbody=%([\w.\-]+)")
_CONDITION = re.compile(r"\bcondition=%([\w.\-]+)")
# Host callbacks: jax.pure_callback/io_callback/debug.print lower to custom calls with
# "callback" in the name (CPU/GPU) or, on TPU, to host send/recv that JAX tags with a
# transfer handler (untagged host send/recv also carry a multi-slice program's DCN traffic).
_HOST_TRANSFER = re.compile(r"\b(send|recv)\(.*_xla_host_transfer_handler_name")


def summarize(hlo: str) -> dict:
  """Counts over every computation of the module (a loop body's ops are counted once).

  Returns `collectives` {kind: count} (async -start/-done pairs count once),
  `while_loops`, `matmul_loops` (the loops whose body runs dots or convolutions,
  e.g. scanned layers; not the small loops of random sampling) with their known
  `trip_counts` (None: unknown), `custom_call_targets` {name: count},
  `host_transfers` (JAX's callback send/recv to the host), and `matmuls` {"result<-operands":
  count} over dot and convolution ops, e.g. "f32<-bf16,bf16" (bf16 inputs, f32
  accumulation).
  """
  ops = collections.Counter()
  matmuls = collections.Counter()
  targets = collections.Counter(_TARGET.findall(hlo))
  dtypes: dict[str, str] = {}
  calls: dict[str, set] = collections.defaultdict(set)
  has_matmul: set = set()
  pending = []       # (computation, result dtype, operand names) of each dot/convolution
  loops = []         # (body computation, trip count)
  host, current = 0, ""
  constants: dict[str, int] = {}   # integer scalar constants
  limits: dict[str, list] = {}     # loop condition -> operands of its ROOT `i < n`
  for line in hlo.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      c = _COMPUTATION.match(line)
      if c and "=" not in line.split("(")[0]:
        current = c.group(1)
      continue
    name, shape, opcode, rest = m.groups()
    result = _DTYPE.search(shape)
    dtypes[name] = result.group(1) if result and not shape.startswith("(") else "tuple"
    calls[current].update(_CALLEE.findall(rest))
    if opcode.endswith("-done"):
      continue
    ops[opcode.removesuffix("-start")] += 1
    if opcode in ("dot", "convolution"):
      has_matmul.add(current)
      pending.append((dtypes[name], _OPERAND.findall(rest.split(")")[0])))
    elif opcode == "while":
      t, body, cond = _TRIP_COUNT.search(rest), _BODY.search(rest), _CONDITION.search(rest)
      loops.append((body.group(1) if body else "", int(t.group(1)) if t else None,
                    cond.group(1) if cond else ""))
    elif opcode == "constant" and re.match(r"[su]\d+\[\]", shape) and re.match(r"-?\d+\)", rest):
      constants[name] = int(rest.split(")")[0])
    elif opcode == "compare" and line.lstrip().startswith("ROOT") and "direction=LT" in rest:
      limits[current] = _OPERAND.findall(rest.split(")")[0])
    if _HOST_TRANSFER.search(f"{opcode}({rest}"):
      host += 1
  for result, operands in pending:
    matmuls[f"{result}<-{','.join(dtypes.get(o, '?') for o in operands)}"] += 1

  def runs_matmuls(comp, seen=()):
    if comp in has_matmul:
      return True
    return any(runs_matmuls(c, seen + (comp,)) for c in calls.get(comp, ()) if c not in seen)

  def trip_count(known, cond):
    """XLA's known_trip_count, else `i < N` in the condition (scan counts from 0 by 1)."""
    if known is not None:
      return known
    found = [constants[o] for o in limits.get(cond, ()) if o in constants]
    return found[0] if len(found) == 1 else None

  heavy = [trip_count(trip, cond) for body, trip, cond in loops if runs_matmuls(body)]
  return {
      "collectives": {k: ops.get(k, 0) for k in COLLECTIVES},
      "while_loops": len(loops),
      "matmul_loops": len(heavy),
      "trip_counts": heavy,
      "custom_call_targets": dict(targets),
      "host_transfers": host,
      "matmuls": dict(matmuls),
  }


def host_callbacks(summary: dict) -> list[str]:
  """The custom calls and host transfers through which a program calls back into Python."""
  found = [t for t in summary["custom_call_targets"] if "callback" in t.lower()]
  if summary["host_transfers"]:
    found.append(f"{summary['host_transfers']} host send/recv")
  return found


def collective_shapes(hlo: str, kind: str) -> list[list[tuple[int, ...]]]:
  """Per `kind` op (e.g. "reduce-scatter"; async starts included), the dims of each array it
  produces (XLA combines several into one op with a tuple result)."""
  out = []
  for line in hlo.splitlines():
    m = _INSTRUCTION.match(line)
    if m and m.group(3) in (kind, f"{kind}-start"):
      out.append([tuple(int(d) for d in dims.split(",") if d)
                  for dims in re.findall(r"[a-z]+[0-9]*\[([0-9,]*)\]", m.group(2))])
  return out
