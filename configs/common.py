"""Defaults shared by every config; each config file edits what differs."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.stage = "pretrain"
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      variant="B/16",
      dtype="float32",          # compute dtype: float32 | bfloat16
      param_dtype="float32",
      attention="auto",         # auto: cuDNN flash (GPU, bf16), fused kernel (CPU, f32), else XLA
      cpu_kernels=True,         # CPU float32: vmae2_jax/kernels (False = XLA ops only)
      remat="none",             # none | full | dots | dots_no_batch
      scan_layers=False,        # one compiled block in a loop (deep models)
      drop_path_rate=0.0,
  ))
  c.masking = ml_collections.ConfigDict(dict(
      encoder="tube", encoder_ratio=0.9, decoder="running_cell", decoder_ratio=0.5))
  c.data = ml_collections.ConfigDict(dict(
      source="shards",          # shards | tfds | synthetic (generated clips, tests)
      train_path="",            # one shard set ("demo" = the embedded demo set) ...
      sources=[],               # ... or a weighted mixture: [{path, weight, sampling_rate}]
      val_path="",
      frames=16, image_size=224, sampling_rate=4, num_sample=4,
      num_videos=0,             # videos per epoch (for epoch-based schedules)
      shuffle=True, read_threads=2, num_workers=0, skip_corrupt=False))

  c.batch_size = 32 * 8          # global number of videos (views not counted)
  c.epochs = 300
  c.total_steps = 0              # > 0 overrides epochs x steps per epoch
  c.warmup_steps = 0             # > 0 overrides warmup_epochs (with total_steps)
  c.stop_after = 0               # > 0 ends this run after N steps (resumes later)
  c.optim = ml_collections.ConfigDict(dict(
      base_lr=1e-3, min_lr=1e-5, warmup_epochs=30, weight_decay=0.05,
      b1=0.9, b2=0.95, eps=1e-8, clip_grad=0.0,
      mu_dtype="",               # "" = param dtype; "bfloat16" halves the first moment
      nu_dtype=""))              # same for the second moment (see docs/scaling.md)
  c.normalize_target = True

  # Per-slice mesh sizes (-1 fills) and dcn_* sizes across slices/hosts.
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1,
                                          dcn_data=1, dcn_fsdp=1, dcn_tensor=1))
  # None = vmae2_jax.sharding.rules.DEFAULT_RULES; else ((logical, mesh axes), ...).
  c.sharding_rules = ml_collections.FieldReference(None, field_type=tuple)
  c.compile_only = False         # lower + compile the step, print memory/FLOPs, exit
  # glibc malloc: "keep" reuses freed memory instead of faulting in fresh pages
  # each step (~12% of a CPU step); "auto" = keep on CPU-only hosts (host_memory.py).
  c.host_malloc = "auto"
  c.distributed = ml_collections.ConfigDict(dict(
      coordinator_address="", num_processes=0, process_id=-1, auto=False))

  c.log_every = 50
  c.checkpoint_every = 1000
  c.keep_checkpoints = 3
  c.keep_period = 0              # > 0 also keeps every N-th step forever
  c.async_checkpoint = True
  c.init_from = ""               # a `vmae2_jax.convert` output or model checkpoint dir
  c.reconstruction = ml_collections.ConfigDict(dict(enabled=False, num_clips=3))
  return c


def unlabeled_hybrid_sources(root: str = "/data/shards"):
  """The UnlabeledHybrid mixture (~1.35M clips); weights ~ clip counts."""
  return [
      dict(path=f"{root}/kinetics710", weight=0.49, sampling_rate=4),
      dict(path=f"{root}/ssv2", weight=0.13, sampling_rate=2),
      dict(path=f"{root}/ava", weight=0.02, sampling_rate=4),
      dict(path=f"{root}/webvid2m", weight=0.25, sampling_rate=4),
      dict(path=f"{root}/instagram", weight=0.11, sampling_rate=4),
  ]


def pretrain_recipe(variant: str, *, per_gpu_batch: int, gpus: int, base_lr: float,
                    warmup_epochs: int, epochs: int, clip_grad: float = 0.0,
                    remat: str = "none", scan_layers: bool = False) -> ml_collections.ConfigDict:
  """A reference pre-training recipe on UnlabeledHybrid with dual masking.

  The global batch is the reference's per-GPU videos x GPUs; lr is scaled by
  batch/256 in the trainer (views from num_sample not counted).
  """
  c = base_config()
  c.model.variant = variant
  c.model.remat = remat
  c.model.scan_layers = scan_layers
  c.batch_size = per_gpu_batch * gpus
  c.epochs = epochs
  c.optim.base_lr = base_lr
  c.optim.warmup_epochs = warmup_epochs
  c.optim.clip_grad = clip_grad
  c.data.sources = unlabeled_hybrid_sources()
  c.data.num_videos = 1_350_000
  c.data.num_sample = 4
  return c
