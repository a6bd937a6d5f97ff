"""Input pipelines: per-host batches of uint8 clips, resumable through get/set_state."""

from __future__ import annotations


def make_train_iterator(config, *, process_index: int, process_count: int, seed: int):
  """The training iterator for config.stage from config.data.source."""
  d = config.data
  source = d.get("source", "synthetic")
  if source == "synthetic":
    from vmae2_jax.data.synthetic import SyntheticIterator
    return SyntheticIterator(batch_size=config.batch_size, frames=d.frames, size=d.image_size,
                             num_sample=d.get("num_sample", 1), seed=seed,
                             process_index=process_index, process_count=process_count,
                             num_videos=d.get("num_videos", 0))
  from vmae2_jax.data import pipelines
  if config.stage == "pretrain":
    return pipelines.make_pretrain_iterator(config, process_index=process_index,
                                            process_count=process_count, seed=seed)
  return pipelines.make_finetune_iterator(config, process_index=process_index,
                                          process_count=process_count, seed=seed)
