"""Every config field with its default, and the recipe builders the stage configs use.

This file is the one place defaults live: library code reads config fields
and never restates a default. Each config file edits what differs.
"""

import ml_collections

STAGES = ("pretrain", "postpretrain", "finetune", "distill", "detect")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # pretrain: masked video modelling with dual masking. postpretrain / finetune:
  # supervised classification (same task; the name is kept with the run).
  c.stage = "pretrain"
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      variant="B/16",
      dtype="float32",          # compute dtype: float32 | bfloat16
      param_dtype="float32",
      attention="auto",         # auto: cuDNN (GPU), Pallas (TPU), CPU kernel (f32), else XLA
      cpu_kernels=True,         # CPU float32: vmae2_jax/kernels (False = XLA ops only)
      remat="none",             # full|dots|dots_no_batch|proj|*_offload|none
      scan_layers=False,        # one compiled block in a loop (deep models)
      drop_path_rate=0.0,       # encoder and pre-training decoder alike
      num_classes=0,            # classifier head; 0 = the training shards' class count
      head_dropout=0.0,         # dropout between fc_norm and the head
      head_init_scale=0.001,    # the fresh head's weight and bias are multiplied by this
      # The model's input normalisation, (x/255 - mean) / std per RGB channel (the reference's
      # ImageNet statistics); stored in model.json, so predict and extract use a model's own.
      pixel_mean=(0.485, 0.456, 0.406), pixel_std=(0.229, 0.224, 0.225),
  ))
  c.masking = ml_collections.ConfigDict(dict(
      encoder="tube", encoder_ratio=0.9, decoder="running_cell", decoder_ratio=0.5))
  c.data = ml_collections.ConfigDict(dict(
      source="shards",          # shards | tfds | synthetic (generated clips, no labels)
      train_path="",            # one shard set ("demo" = the embedded demo set) ...
      sources=(),               # ... or a weighted mixture: ({path, weight, sampling_rate}, ...)
      val_path="",              # validation and multi-view test set ("" = none)
      class_names="",           # text file, one name a line ("" = the shards' manifest)
      frames=16, image_size=224, sampling_rate=4,
      num_sample=4,             # repeated views per decoded video (not counted in the batch)
      num_videos=0,             # videos per epoch (0 = the training shards' count)
      scales=(1.0, 0.875, 0.75, 0.66),   # pre-training multi-scale crop
      sampling="dense",         # supervised clip sampling: dense | segment (Something-Something)
      flip=True,                # horizontal flip p=0.5 (False for Something-Something)
      randaug="rand-m7-n4-mstd0.5-inc1",  # "" = off
      randaug_after_crop=False,  # True: RandAugment on the crop (faster, not the reference order)
      reprob=0.25,              # random erasing probability
      rrc_scale=(0.08, 1.0), rrc_ratio=(3 / 4, 4 / 3),  # random resized crop
      test_num_segment=5, test_num_crop=3,  # multi-view test: temporal x spatial views
      shuffle=True, read_threads=2, num_workers=0, skip_corrupt=False, tune_malloc=True,
      tfds_name="", tfds_data_dir="", tfds_train_split="train",
      tfds_validation_split="validation", tfds_video_key="video", tfds_label_key="label"))

  c.batch_size = 32 * 8          # videos per optimizer update, all devices (views not counted)
  c.epochs = 300
  c.total_steps = 0              # > 0 overrides epochs x steps per epoch
  c.warmup_steps = 0             # > 0 overrides optim.warmup_epochs
  c.stop_after = 0               # > 0 ends this run after N steps (resumes later)
  c.optim = ml_collections.ConfigDict(dict(
      base_lr=1e-3, min_lr=1e-5, warmup_epochs=30, weight_decay=0.05,
      b1=0.9, b2=0.95, eps=1e-8, clip_grad=0.0,
      layer_decay=1.0,           # < 1: lr of layer i scaled by layer_decay^(L+1-i)
      accum_steps=1,             # micro-batches per update (same effective batch, less memory)
      mu_dtype="",               # "" = param dtype; "bfloat16" halves the first moment
      nu_dtype=""))              # same for the second moment (see docs/scaling.md)
  c.normalize_target = True
  # Supervised stages: mixup / cutmix on device, label smoothing, soft-target loss.
  c.mixup = ml_collections.ConfigDict(dict(
      mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1))
  c.eval = ml_collections.ConfigDict(dict(
      every_steps=0,             # single-view validation: 0 = once per epoch, -1 = never
      batch_size=0,              # videos per evaluation batch (0 = batch_size)
      test_at_end=True,          # multi-view test on data.val_path when training ends
      confusion_max_classes=100,  # confusion-matrix picture up to this many classes
  ))
  c.eval_only = False            # multi-view test of the latest (or init_from) model, no training

  # Per-slice mesh sizes (-1 fills) and dcn_* sizes across slices/hosts.
  c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1,
                                          dcn_data=1, dcn_fsdp=1, dcn_tensor=1))
  # None = vmae2_jax.sharding.rules.DEFAULT_RULES; else ((logical, mesh axes), ...).
  c.sharding_rules = ml_collections.FieldReference(None, field_type=tuple)
  c.compile_only = False         # lower + compile the step, print memory/FLOPs, exit
  c.compile_topology = ""        # with compile_only: a TPU as booked (v5p-128; `aot` extra)
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
  # A non-finite loss, gradient or parameter norm. "stop": end the run naming the
  # last checkpoint whose parameters gave a finite loss (later ones are set aside
  # in WORKDIR/set_aside). "skip": keep the parameters and optimizer moments of
  # that step unchanged on device (step counts and the lr schedule advance), count
  # it in the log and go on.
  c.nonfinite = "stop"
  c.checkpoint_fallback = False  # latest step damaged: restore the previous committed one
  # Resume although model, masking, batch, data order or schedule fields differ
  # from WORKDIR/config.json (the differences are logged and kept in WORKDIR/run.json).
  c.allow_config_change = False
  # Start from: a converted checkpoint, a run's workdir (its latest step), WORKDIR/best,
  # or a checkpoint step directory. Stage surgery as needed (see docs/checkpoints.md).
  c.init_from = ""
  c.init_label_map = ""          # re-index a classifier head ("710to400", a JSON file, "" = auto)
  c.init_fresh_head = False      # keep the fresh head even when init_from has one that fits
  # stage="distill": the student (model, init_from) learns the frozen teacher's logits on
  # the same augmented, mixed clips (vmae2_jax/training/tasks/distill.py).
  c.distill = ml_collections.ConfigDict(dict(
      teacher_from="",           # a run workdir, WORKDIR/best or a converted classifier
      teacher_variant="",        # its size ("g/14"); checked against the checkpoint's
      teacher_image_size=0,      # 0 = data.image_size; else the same crop resized to it
      temperature=1.0,           # KL(teacher/T || student/T) x T^2
      label_weight=0.0,          # + this x cross-entropy on the (mixed, smoothed) labels
      teacher_eval=True,         # the teacher's single-view validation once at the start
  ))
  # stage="detect": AVA action detection (vmae2_jax/data/ava, training/tasks/detect.py).
  # Frames per clip and their stride are data.frames / data.sampling_rate (16 at stride 4:
  # what data_prep.ava stores per keyframe); model.num_classes is the label width (80 for
  # AVA; 0 = the shards' label map); data.image_size is the grid the position table is
  # built for (resized to each frame's grid).
  c.detect = ml_collections.ConfigDict(dict(
      short_side=256,           # train and test frames: short side resized to this
      crop_size=224,            # train: random square crop (the reference's RandomClip)
      flip=True,                # train: horizontal flip p=0.5, boxes flipped with the frames
      max_boxes=32,             # train boxes per clip (more: a random subset, as the reference)
      eval_max_boxes=64,        # test boxes per clip (more: the highest scored)
      box_jitter=(0.2, 0.1, 0.1, 0.05),  # train GT box jitter (x out, x in, y out, y in); () off
      color_jitter=(20.0, 0.1, 0.1),     # on device: HSV hue degrees, saturation, value; () off
      test_boxes="proposals",   # proposals | groundtruth: the boxes test clips are scored on
      proposals="",             # a proposals pickle replacing the shards' own ("" = shards')
      person_score=0.8,         # proposals kept at or above this detector score
      widen=(0.1, 0.05),        # test boxes widened (x, y fraction) for pooling, as the reference
      # Test frames keep their aspect ratio, padded to the first (H, W) that holds them.
      buckets=((256, 256), (256, 352), (256, 464), (256, 480), (256, 624),
               (352, 256), (464, 256)),
      groundtruth="",           # evaluation: AVA ground-truth CSV of the test set
      label_map="",             # evaluation class list (e.g. AVA's 60-class pbtxt; "" = all)
      exclusions="",            # evaluation: excluded timestamps CSV
      top_k=0,                  # evaluation: detections kept per keyframe (0 = all; AVA's
                                # ActivityNet evaluator keeps 50)
  ))
  # The picture at the end of pre-training: the first num_clips videos of the training set
  # (file order, centre view); first_classes (names) are shown before the others.
  c.reconstruction = ml_collections.ConfigDict(dict(enabled=False, num_clips=3,
                                                    first_classes=()))
  return c


def unlabeled_hybrid_sources(root: str = "/data/shards"):
  """The UnlabeledHybrid mixture (~1.35M clips); weights ~ clip counts."""
  return (
      dict(path=f"{root}/kinetics710", weight=0.49, sampling_rate=4),
      dict(path=f"{root}/ssv2", weight=0.13, sampling_rate=2),
      dict(path=f"{root}/ava", weight=0.02, sampling_rate=4),
      dict(path=f"{root}/webvid2m", weight=0.25, sampling_rate=4),
      dict(path=f"{root}/instagram", weight=0.11, sampling_rate=4),
  )


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


# Labelled sets of the reference: classes, clip sampling, flip and test views.
# The epoch length comes from the training shards (data.num_videos = 0).
DATASETS = {
    "k400": dict(num_classes=400, sampling="dense", sampling_rate=4,
                 test_num_segment=5, test_num_crop=3, flip=True),
    "k600": dict(num_classes=600, sampling="dense", sampling_rate=4,
                 test_num_segment=5, test_num_crop=3, flip=True),
    "k700": dict(num_classes=700, sampling="dense", sampling_rate=4,
                 test_num_segment=5, test_num_crop=3, flip=True),
    "k710": dict(num_classes=710, sampling="dense", sampling_rate=4,
                 test_num_segment=5, test_num_crop=3, flip=True),
    "ssv2": dict(num_classes=174, sampling="segment", sampling_rate=4,
                 test_num_segment=2, test_num_crop=3, flip=False),
    "ucf101": dict(num_classes=101, sampling="dense", sampling_rate=4,
                   test_num_segment=5, test_num_crop=3, flip=True),
    "hmdb51": dict(num_classes=51, sampling="dense", sampling_rate=2,
                   test_num_segment=5, test_num_crop=3, flip=True),
}


def finetune_recipe(variant: str, dataset: str, *, per_gpu_batch: int, gpus: int,
                    base_lr: float, layer_decay: float, epochs: int, warmup_epochs: int = 5,
                    drop_path: float = 0.1, head_dropout: float = 0.0,
                    weight_decay: float = 0.05, clip_grad: float = 0.0, min_lr: float = 1e-6,
                    stage: str = "finetune", init_from: str = "", root: str = "/data/shards",
                    remat: str = "none", scan_layers: bool = False
                    ) -> ml_collections.ConfigDict:
  """A reference supervised recipe (run_class_finetuning.py with its defaults).

  AdamW (0.9, 0.999), eps 1e-8; lr, min_lr scaled by batch/256 (repeated views
  not counted); warmup from 0 then cosine; layer-wise lr decay; 2 repeated
  views; RandAugment rand-m7-n4-mstd0.5-inc1, random resized crop, random
  erasing 0.25; mixup 0.8 / cutmix 1.0 (switch 0.5) with label smoothing 0.1.
  """
  ds = DATASETS[dataset]
  c = base_config()
  c.stage = stage
  c.model.variant = variant
  c.model.remat = remat
  c.model.scan_layers = scan_layers
  c.model.num_classes = ds["num_classes"]
  c.model.drop_path_rate = drop_path
  c.model.head_dropout = head_dropout
  c.data.train_path = f"{root}/{dataset}_train"
  c.data.val_path = f"{root}/{dataset}_val"
  c.data.num_sample = 2
  for key in ("sampling", "sampling_rate", "test_num_segment", "test_num_crop", "flip"):
    c.data[key] = ds[key]
  c.batch_size = per_gpu_batch * gpus
  c.epochs = epochs
  c.optim.update(dict(base_lr=base_lr, min_lr=min_lr, warmup_epochs=warmup_epochs,
                      weight_decay=weight_decay, b1=0.9, b2=0.999, eps=1e-8,
                      clip_grad=clip_grad, layer_decay=layer_decay))
  c.mixup.update(dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5,
                      label_smoothing=0.1))
  c.init_from = init_from
  c.log_every = 50
  c.checkpoint_every = 1000
  return c


def config_from_json(path: str) -> ml_collections.ConfigDict:
  """A run's saved config.json on top of today's defaults (fields added since keep theirs)."""
  import json

  from vmae2_jax import paths
  saved = json.loads(paths.read_text(path))
  config = base_config()

  def merge(target, values):
    for key, value in values.items():
      if key not in target:
        continue  # a field that no longer exists
      current = target[key]
      if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
        merge(current, value)
      elif isinstance(current, tuple) and isinstance(value, list):
        target[key] = tuple(value)
      elif current is None or value is None or isinstance(value, type(current)):
        target[key] = value
      elif isinstance(current, float) and isinstance(value, int):
        target[key] = float(value)
  merge(config, saved)
  return config
