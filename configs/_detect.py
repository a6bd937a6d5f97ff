"""Defaults of config.detect, the AVA action detection fields (configs/detect_*.py call this).

Frames per clip and their stride are config.data.frames / config.data.sampling_rate
(16 at stride 4: what data_prep.ava stores per keyframe); config.model.num_classes is
the label width (80 for AVA; 0 = the shards' label map).
"""

import ml_collections


def detect_defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
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
