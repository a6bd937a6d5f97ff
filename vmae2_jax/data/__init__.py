"""Input pipelines: per-host batches of uint8 clips, resumable through get/set_state.

Training: make_train_iterator (below). Validation and multi-view test:
pipelines.make_validation_iterator / make_eval_iterator. Training-set size and
classes: info.train_info.
"""

from __future__ import annotations

SUPERVISED_STAGES = ("postpretrain", "finetune", "distill")


def make_train_iterator(config, *, process_index: int, process_count: int, seed: int):
  """The training iterator for config.stage, reading config.data.source.

  "pretrain" reads shards, TFDS or generated clips ("synthetic");
  "postpretrain" / "finetune" / "distill" need labelled data (shards or TFDS).
  """
  source = config.data.source
  if config.stage == "pretrain":
    if source == "synthetic":
      return _synthetic_iterator(config, process_index, process_count, seed)
    from vmae2_jax.data import pipelines
    return pipelines.make_pretrain_iterator(config, process_index=process_index,
                                            process_count=process_count, seed=seed)
  if config.stage in SUPERVISED_STAGES:
    if source == "synthetic":
      raise ValueError(f"config.data.source='synthetic' has no labels; config.stage="
                       f"{config.stage!r} needs 'shards' or 'tfds'")
    from vmae2_jax.data import pipelines
    return pipelines.make_finetune_iterator(config, process_index=process_index,
                                            process_count=process_count, seed=seed)
  raise ValueError(f"config.stage={config.stage!r}: expected 'pretrain', "
                   f"{' or '.join(repr(s) for s in SUPERVISED_STAGES)}")


def _synthetic_iterator(config, process_index: int, process_count: int, seed: int):
  from vmae2_jax.data.synthetic import SyntheticIterator
  d = config.data
  return SyntheticIterator(batch_size=config.batch_size, frames=d.frames, size=d.image_size,
                           num_sample=d.num_sample, seed=seed, process_index=process_index,
                           process_count=process_count, num_videos=d.num_videos)
