"""The TPU compiler (libtpu, no TPU) on every stage's step of a tiny model, for v5p 2x2x1.

What must hold in an accelerator program: it compiles and fits; none of the
CPU kernels' custom calls and no host callbacks; matmuls take bf16 inputs in
a bfloat16 model; FSDP gathers each layer's weights by itself (not the whole
layer stack at once) and reduce-scatters each layer's weight gradient.
Skipped where libtpu is not installed (the test extra installs it on Linux
x86_64).
"""

import re

import pytest

pytest.importorskip("libtpu", reason="libtpu is not installed (pip install -e '.[aot]'; "
                    "it exists for Linux x86_64 only)")

from tests.helpers import (tiny_detect_config, tiny_finetune_config,  # noqa: E402
                           tiny_pretrain_config)

from vmae2_jax.kernels import cpu as cpu_kernels  # noqa: E402
from vmae2_jax.models import get_variant  # noqa: E402
from vmae2_jax.sharding import topologies  # noqa: E402
from vmae2_jax.training import compile_only, hlo_summary  # noqa: E402

TOPOLOGY = "v5p-8"  # v5p:2x2x1, 4 chips


def _wide_tiny_pretrain(monkeypatch, batch_size: int):
  """A tiny bf16 pre-training config, layers unrolled, 128 wide: every kernel's embedding dim
  divides over up to 64 chips (FSDP's gathers and reduce-scatters then show per layer)."""
  from vmae2_jax.models import variants
  monkeypatch.setitem(variants.VARIANTS, "fsdp/16",
                      variants.ViTSize(128, 2, 2, 16, 4.0, 128, 2, decoder_depth=1))
  return tiny_pretrain_config(**{"batch_size": batch_size, "model.variant": "fsdp/16",
                                 "model.dtype": "bfloat16", "model.scan_layers": False})


def _devices_or_skip(name: str) -> list:
  try:
    return topologies.tpu_devices(topologies.target(name))
  except topologies.TopologyError as e:
    pytest.skip(str(e))


def _compile(config, devices) -> tuple[dict, str]:
  """(compile_only's report, the optimised HLO text) of config's train step."""
  texts = []
  report = compile_only.compile_train_step(config, devices,
                                           on_compiled=lambda c, r: texts.append(c.as_text()))
  return report, texts[0]


def _supervised(stage: str, **kw):
  c = tiny_finetune_config(stage=stage, **kw)
  if stage == "postpretrain":  # the post-pre-training recipe has no mixup
    c.mixup.mixup_alpha, c.mixup.cutmix_alpha = 0.0, 0.0
  return c


# (stage, step, dtype): every stage's train step in bf16, and the multi-view test's
# forward in float32 (the dtype for which CPU builds choose the CPU kernels).
CASES = {
    "pretrain": lambda: tiny_pretrain_config(**{"batch_size": 8}),
    "postpretrain": lambda: _supervised("postpretrain"),
    "finetune": lambda: _supervised("finetune"),
    "test_forward": lambda: _supervised("finetune", **{"model.dtype": "float32",
                                                       "model.attention": "auto"}),
    # AVA detection: encoder on the crop, RoIAlign and the BCE head, HSV jitter (dm-pix)
    "detect": lambda: tiny_detect_config(**{"batch_size": 8}),
    # its test forward on padded frames with a key mask (segment ids in the flash kernel)
    "detect_forward": lambda: tiny_detect_config(**{"model.dtype": "float32"}),
}


@pytest.fixture(scope="module")
def program():
  """name -> (config, report, optimised HLO text), compiled once per module."""
  try:
    target = topologies.target(TOPOLOGY)
    devices = topologies.tpu_devices(target)
  except topologies.TopologyError as e:
    pytest.skip(str(e))
  cache = {}

  def get(name):
    if name not in cache:
      config = CASES[name]()
      if name not in ("test_forward", "detect_forward"):
        config.model.dtype = "bfloat16"
      config.model.scan_layers = False  # layers unrolled: collectives counted per layer
      texts = []
      keep = lambda c, r: texts.append(c.as_text())  # noqa: E731
      if name in ("test_forward", "detect_forward"):
        report = compile_only.compile_test_forward(config, devices, rows=8, on_compiled=keep)
      else:
        report = compile_only.compile_train_step(config, devices, on_compiled=keep)
      compile_only.add_chip_estimates(report, target.chip, headroom=0.1)
      cache[name] = (config, report, texts[0])
    return cache[name]
  return get


def _layer_shapes(config) -> tuple[tuple, tuple]:
  """(whole, per-chip shard) dims of one encoder block's qkv kernel: [W, 3, heads, head_dim]
  split over the 4 chips on its embedding axis."""
  v = get_variant(config.model.variant)
  whole = (v.width, 3, v.heads, v.width // v.heads)
  return whole, (v.width // 4,) + whole[1:]


def _ops_with(hlo: str, kind: str, dims: tuple) -> int:
  """How many `kind` ops produce an array of `dims` (a leading 1 allowed: one layer of the
  stacked parameters)."""
  return sum(any(d in (dims, (1,) + dims) for d in shapes)
             for shapes in hlo_summary.collective_shapes(hlo, kind))


@pytest.mark.parametrize("name", list(CASES))
def test_compiles_for_tpu_fits_and_keeps_cpu_code_out(program, name):
  config, report, hlo = program(name)
  assert report["platform"] == "tpu" and report["device_kind"].startswith("TPU v5")
  assert report["devices"] == 4 and report["fits"] is True
  assert 0 < report["peak_bytes_per_chip"] < 0.01 * report["hbm_bytes_per_chip"]
  assert report["attention"] == "flash_tpu"  # attention="auto" on TPU: the Pallas kernel
  targets = report["hlo"]["custom_call_targets"]
  assert not set(targets) & set(cpu_kernels._TARGETS), targets
  assert "tpu_custom_call" in targets, targets  # the kernel is in the program (Mosaic)
  assert not hlo_summary.host_callbacks(report["hlo"])
  # no all-reduce at every trip of a rejection loop (mixup's Beta draws split over the chips
  # did that: tests/test_loop_collectives.py), nor a collective inside a conditional
  assert report["hlo"]["open_ended_collective_loops"] == 0, report["hlo"]
  assert report["hlo"]["conditional_collectives"] == 0, report["hlo"]
  assert report["compiler_estimated_mfu"] is not None and report["compiler_estimated_mfu"] > 0
  assert "compiler-estimated MFU" in compile_only.format_report(report)


@pytest.mark.parametrize("name", ["pretrain", "postpretrain", "finetune", "detect"])
def test_bf16_matmuls_take_bf16_inputs(program, name):
  _, report, _ = program(name)
  matmuls = report["hlo"]["matmuls"]
  assert sum(matmuls.values()) > 0
  not_bf16 = {k: n for k, n in matmuls.items() if k.split("<-")[1] != "bf16,bf16"}
  assert not not_bf16, f"matmuls with non-bf16 inputs: {not_bf16}"


@pytest.mark.parametrize("name", list(CASES))
def test_fsdp_gathers_each_layer_by_itself(program, name):
  config, _, hlo = program(name)
  whole, _ = _layer_shapes(config)
  depth = get_variant(config.model.variant).depth
  assert _ops_with(hlo, "all-gather", whole) >= depth
  stacked = (depth,) + whole
  assert _ops_with(hlo, "all-gather", stacked) == 0  # never the whole stack at once


@pytest.mark.xfail(strict=True, reason="issue 15: at width 32 libtpu all-reduces the layer "
                   "weight gradients whole instead of reduce-scattering their 8-row FSDP shards "
                   "(at width 128 it reduce-scatters all: test_fused_reduce_scatters_are_counted"
                   "_as_reduce_scatters; ViT-g's qkv: BENCHMARKS.md)")
@pytest.mark.parametrize("name", ["pretrain", "finetune"])
def test_fsdp_reduce_scatters_each_layer_gradient(program, name):
  config, _, hlo = program(name)
  _, shard = _layer_shapes(config)
  depth = get_variant(config.model.variant).depth
  assert _ops_with(hlo, "reduce-scatter", shard) >= depth


def test_fused_reduce_scatters_are_counted_as_reduce_scatters(monkeypatch):
  """libtpu fuses each FSDP gradient reduce-scatter with its matmul into a kCustom fusion
  calling `%all-reduce-scatter.N` (an all-reduce, then this chip's slice): no op is named
  reduce-scatter. The report (bench aot's) counts them as reduce-scatters, one per encoder
  kernel per layer, and not the all-reduces inside them again."""
  devices = _devices_or_skip(TOPOLOGY)
  # 128 wide: every kernel's 32-row shard is reduce-scattered (32 wide: none is).
  report, hlo = _compile(_wide_tiny_pretrain(monkeypatch, 8), devices)
  counted = report["hlo"]["collectives"]
  assert "calls=%all-reduce-scatter" in hlo and " reduce-scatter(" not in hlo
  # qkv [128, 3, 2, 64], proj [128, 128], fc1 [128, 512], fc2 [512, 128] of each of the 2
  # encoder layers: the "embed" dim sliced to this chip's 32
  for shard in [(32, 3, 2, 64), (128, 32), (32, 512), (512, 32)]:
    assert _ops_with(hlo, "reduce-scatter", shard) >= 2, (shard, counted)
  fused = hlo.count("kind=kCustom, calls=%all-reduce-scatter")
  assert counted["reduce-scatter"] == fused >= 8
  assert counted["reduce-scatter"] == hlo_summary.collectives(hlo)["reduce-scatter"]["count"]
  all_reduce_ops = sum(1 for line in hlo.splitlines()
                       if re.search(r"\sall-reduce(-start)?\(", line))
  assert counted["all-reduce"] == all_reduce_ops - fused  # the fused ones' inner all-reduces
  assert f"reduce-scatter {fused}" in compile_only.format_report(report)


def test_libtpu_for_compiling_leaves_a_cpu_host_cpu_only(monkeypatch):
  """Installed to compile for TPUs (this module runs only with libtpu), libtpu does not turn
  a host without TPU chips into an accelerator host (glibc malloc tuning stays on)."""
  import glob
  import importlib.util
  from vmae2_jax import host_memory
  if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
    pytest.skip("this host has TPU chips")
  if importlib.util.find_spec("jax_cuda12_plugin"):
    pytest.skip("a GPU plugin is installed")
  monkeypatch.delenv("JAX_PLATFORMS", raising=False)
  assert host_memory.cpu_only_host()


def test_a_host_callback_in_a_tpu_program_is_found(program):
  """The check above can fail: jax.pure_callback compiled for the same TPU shows up."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  program("test_forward")  # the devices exist (skips with the module otherwise)
  devices = topologies.tpu_devices(topologies.target(TOPOLOGY))
  mesh = jax.sharding.Mesh(np.array(devices), ("x",))
  x = jax.ShapeDtypeStruct((8, 128), jnp.float32,
                           sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x")))

  def f(x):
    return 2 * jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

  summary = hlo_summary.summarize(jax.jit(f).lower(x).compile().as_text())
  assert hlo_summary.host_callbacks(summary)


@pytest.mark.parametrize("mesh, gathers", [({"data": 2, "fsdp": 32}, True),
                                           ({"data": 1, "fsdp": 64}, False)])
def test_fsdp_on_a_64_chip_torus_gathers_only_over_32_chips(monkeypatch, mesh, gathers):
  """v5p-128 (4x4x4): with FSDP over all 64 chips libtpu 0.0.42.1 all-gathers no weight (each
  gather becomes a dynamic-update-slice into zeros plus a 64-chip all-reduce); with
  data 2 x fsdp 32 every layer's weights are all-gathered (issue 15, docs/scaling.md)."""
  devices = _devices_or_skip("v5p-128")
  config = _wide_tiny_pretrain(monkeypatch, 32)
  config.mesh.update(mesh)
  _, hlo = _compile(config, devices)
  qkv = (128, 3, 2, 64)
  assert (_ops_with(hlo, "all-gather", qkv) >= 2) == gathers


@pytest.mark.parametrize("generation, topology", [
    ("v4", "v4:2x2x1"), ("v5e", "v5e:2x2"), ("v5p", "v5p:2x2x1"), ("v6e", "v6e:2x2")])
def test_chip_hbm_is_what_the_tpu_compiler_lets_a_program_use(generation, topology):
  """Fits and headroom are judged against topologies.CHIPS' HBM: it must be the limit the
  TPU compiler itself states when a program is too big for the chip (a second or so each)."""
  import re
  import jax
  import jax.numpy as jnp
  import numpy as np
  devices = topologies.tpu_devices(topologies.target(topology))
  one = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices[:1]), ("x",)),
                                   jax.sharding.PartitionSpec())
  too_big = jax.ShapeDtypeStruct((2**37,), jnp.float32, sharding=one)  # 512 GiB
  with pytest.raises(Exception, match="RESOURCE_EXHAUSTED") as e:
    jax.jit(lambda a: a + 1, out_shardings=one).lower(too_big).compile()
  said = re.search(r"available HBM \(([\d.]+)G\)", str(e.value))
  assert said, str(e.value)[:300]
  table = topologies.CHIPS[generation].hbm_bytes / 2**30
  # libtpu releases reserve a few MB more or less (0.0.50.1 states v5p 95.73 and v6e 31.24
  # GiB where 0.0.42.1 states 95.74 and 31.25); the nominal sizes are 0.3-1.3 GiB off.
  assert abs(table - float(said.group(1))) <= 0.05, (table, said.group(1))


def _ici_group_devices(hlo: str) -> set[int]:
  """The logical device ids named in the replica groups of the program's ICI collectives
  (explicit `{{0,1},{2,3}}` lists and the iota form `[G,N]<=[...]`)."""
  ids = set()
  for groups in re.findall(r"replica_groups=(\{\{[\d,{}]*\}\}|\[[\d,]+\]<=\[[\d,]+\])", hlo):
    if groups.startswith("{"):
      ids.update(int(i) for i in re.findall(r"\d+", groups))
    else:
      shape = [int(d) for d in groups.split("]")[0][1:].split(",")]
      ids.update(range(shape[0] * shape[1] if len(shape) > 1 else shape[0]))
  return ids


def test_two_slices_all_reduce_gradients_over_dcn_and_keep_fsdp_inside_each(monkeypatch):
  """2xv5p-8 (two 4-chip slices joined over DCN): compile_only puts the data axis across the
  slices; FSDP's gathers and reduce-scatters stay on each slice's ICI and only the gradient
  all-reduce crosses over DCN, which libtpu compiles as send/recv pairs for its megascale
  runtime: counted as DCN transfers, never as host callbacks."""
  config = _wide_tiny_pretrain(monkeypatch, 16)
  try:
    target, devices = compile_only.target_devices(config, "2xv5p-8")
  except compile_only.ConfigError as e:
    pytest.skip(str(e))
  assert target.num_slices == 2 and config.mesh.dcn_data == 2
  report, hlo = _compile(config, devices)
  compile_only.add_chip_estimates(report, target.chip)
  h = report["hlo"]
  assert report["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1} and report["devices"] == 8
  assert _ici_group_devices(hlo) == {0, 1, 2, 3}  # one slice's 4 chips, never the other's
  qkv = (128, 3, 2, 64)
  assert _ops_with(hlo, "all-gather", qkv) >= 2  # FSDP on ICI, per layer
  assert set(h["dcn_transfers"]) == {"ALL_REDUCE"} and h["dcn_transfers"]["ALL_REDUCE"] > 0
  # what crosses is this chip's FSDP shard of the bf16 gradients (about a sixth of the f32
  # parameters and two Adam moments it holds; a little more in libtpu's padded DCN layout)
  grads_bf16 = report["state_bytes_per_device"] / 3 / 2
  assert grads_bf16 <= h["dcn_bytes"]["ALL_REDUCE"] <= 1.5 * grads_bf16, (h["dcn_bytes"],
                                                                          grads_bf16)
  assert h["host_transfers"] == 0 and not hlo_summary.host_callbacks(h)
  text = compile_only.format_report(report)
  assert "across slices (DCN" in text and "host callbacks: none" in text
  # libtpu 0.0.42.1's cost model prices no multi-slice program (a negative optimal_seconds):
  # the report says so instead of printing nothing
  if "optimal_seconds" not in report:
    assert report["compiler_estimated_mfu"] is None
    assert "gives none for a multi-slice program" in text


def test_each_slice_of_a_multi_slice_mesh_is_laid_out_as_one_slice():
  """config.mesh data 2 x fsdp 32 with dcn_data=2 on 2xv5p-128: mesh_utils cannot map 32 onto
  the 4x4x4 torus; each slice then takes the same row-major layout a single v5p-128 gets
  (it raised before), and the data axis's outer half is the second slice."""
  import numpy as np
  from vmae2_jax.sharding import make_mesh
  try:
    two = topologies.tpu_devices(topologies.target("2xv5p-128"))
    one = topologies.tpu_devices(topologies.target("v5p-128"))
  except topologies.TopologyError as e:
    pytest.skip(str(e))
  coords = np.vectorize(lambda d: tuple(d.coords), otypes=[object])
  for in_slice in ({"data": 2, "fsdp": 32, "tensor": 1}, {"data": 1, "fsdp": -1, "tensor": 1}):
    mesh = make_mesh({**in_slice, "dcn_data": 2}, two)
    single = make_mesh(in_slice, one).devices
    rows = single.shape[0]
    assert mesh.devices.shape == (2 * rows,) + single.shape[1:]
    for s in (0, 1):
      block = mesh.devices[s * rows:(s + 1) * rows]
      assert {d.slice_index for d in block.flat} == {s}
      assert (coords(block) == coords(single)).all()
