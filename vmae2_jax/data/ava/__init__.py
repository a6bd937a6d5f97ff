"""AVA spatio-temporal action detection data: file formats, clips, boxes, Grain pipelines.

  formats   AVA's CSVs, label maps, exclusions and proposal pickles (one-line errors)
  clips     which frames a keyframe's clip holds (16 at stride 4, as the reference)
  boxes     box arithmetic in pixels: crop, flip, jitter, widen, IoU
  color     the reference's HSV colour jitter, jittable (dm-pix), run inside the step
  pipeline  make_detect_train_iterator / make_detect_eval_iterator over data_prep.ava shards
"""

from vmae2_jax.data.ava.formats import (AvaFormatError, BoxRow, image_key, read_box_csv,
                                        read_exclusions, read_label_map, read_proposals,
                                        split_key, write_box_csv, write_proposals)
from vmae2_jax.data.ava.pipeline import (DetectDataError, DetectEvalIterator, detect_train_info,
                                         make_detect_eval_iterator, make_detect_train_iterator)

__all__ = ["AvaFormatError", "BoxRow", "DetectDataError", "DetectEvalIterator",
           "detect_train_info", "image_key",
           "make_detect_eval_iterator", "make_detect_train_iterator", "read_box_csv",
           "read_exclusions", "read_label_map", "read_proposals", "split_key", "write_box_csv",
           "write_proposals"]
