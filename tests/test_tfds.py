"""TensorFlow Datasets for real: data sets prepared by tfds read through
``builder.as_data_source`` into the pre-training, fine-tuning and evaluation
pipelines, with TensorFlow made unimportable.

tests/data/tfds holds ``vmae2_demo_videos/video``, prepared once by tfds with
``python -m data_prep.tfds_demo --data_dir=tests/data/tfds --config=video`` in
an environment with TensorFlow (tfds 4.9's Video feature cannot be constructed
without it; see tests/data/tfds/README.md). Its features are UCF101's
(Video(encoding_format="jpeg") + ClassLabel) and its splits UCF101's (train,
test). The ``frames`` config (Sequence(Image(jpeg))) is prepared here, live,
without TensorFlow.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from data_prep import tfds_demo  # noqa: E402
from vmae2_jax.data import shards, tfds_source  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "tfds")
NAME = "vmae2_demo_videos/video"
# The fixture's examples in the order tfds stored them: labels of train and test.
CLASSES = ("left", "right", "up", "down", "natural")

# Makes `import tensorflow` fail in the subprocess (whether or not it is installed)
# and records every attempt; tensorflow must never end up loaded.
BLOCK_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, importlib.machinery, sys
    ATTEMPTS = []
    class _Blocked(importlib.abc.Loader):
      def create_module(self, spec):
        ATTEMPTS.append(spec.name)
        raise ImportError(f"{spec.name} is blocked in this test")
      def exec_module(self, module):
        raise ImportError("blocked")
    class _BlockTensorflow(importlib.abc.MetaPathFinder):
      def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
          return importlib.machinery.ModuleSpec(name, _Blocked())
        return None
    sys.meta_path.insert(0, _BlockTensorflow())
    try:
      import tensorflow
      raise SystemExit("tensorflow imported despite the blocker")
    except ImportError:
      ATTEMPTS.clear()
    def assert_no_tensorflow():
      loaded = [m for m, v in sys.modules.items()
                if v is not None and (m == "tensorflow" or m.startswith("tensorflow."))]
      assert not loaded, loaded
""")


def _run_without_tensorflow(body: str, timeout: int = 120) -> str:
  code = BLOCK_TENSORFLOW + textwrap.dedent(body) + "\nassert_no_tensorflow()\nprint('OK')\n"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu", TFDS_DATA_DIR=os.path.join(ROOT, "no-such-tfds-dir"))
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=timeout)
  assert r.returncode == 0 and r.stdout.rstrip().endswith("OK"), r.stdout + r.stderr
  return r.stdout


def _as_ucf101(data_dir) -> str:
  """The fixture under UCF101's name, config, version and 101 class names (the
  examples' labels 0..4 are valid there): tfds resolves "ucf101/ucf101_1", the
  name a user gives, to it."""
  import json
  import shutil
  src = os.path.join(FIXTURE, "vmae2_demo_videos", "video", "1.0.0")
  dst = os.path.join(str(data_dir), "ucf101", "ucf101_1", "2.0.0")
  os.makedirs(dst)
  for split in ("train", "test"):
    shutil.copy(os.path.join(src, f"vmae2_demo_videos-{split}.array_record-00000-of-00001"),
                os.path.join(dst, f"ucf101-{split}.array_record-00000-of-00001"))
  with open(os.path.join(src, "dataset_info.json")) as f:
    info = json.load(f)
  info.update(name="ucf101", configName="ucf101_1", version="2.0.0",
              moduleName="tensorflow_datasets.video.ucf101")
  with open(os.path.join(src, "features.json")) as f:
    features = json.load(f)
  features["featuresDict"]["features"]["label"]["classLabel"]["numClasses"] = "101"
  names = os.path.join(os.path.dirname(tfds.__file__), "video", "ucf101_labels.txt")
  for name, obj in (("dataset_info.json", info), ("features.json", features)):
    with open(os.path.join(dst, name), "w") as f:
      json.dump(obj, f)
  shutil.copy(names, os.path.join(dst, "label.labels.txt"))
  return str(data_dir)


def _demo_records(split: str):
  src = shards.ShardSource(shards.demo_path(split))
  return [shards.parse_record(*src[i]) for i in range(len(src))]


# --------------------------------------------------------------------------


def test_pipelines_read_a_tfds_video_set_without_tensorflow(tmp_path):
  """Pre-training, fine-tuning, validation and multi-view test batches from the
  Video fixture, and one slice per host, in a process where TF cannot import;
  then the same data under the name "ucf101/ucf101_1"."""
  ucf = _as_ucf101(tmp_path)
  out = _run_without_tensorflow(f"""
    import collections
    import numpy as np
    from configs.common import base_config
    from vmae2_jax.data import info, make_train_iterator, pipelines

    def cfg(stage, **data):
      c = base_config()
      c.stage = stage
      c.batch_size = 2
      c.eval.batch_size = 2
      c.data.update(dict(source="tfds", tfds_name={NAME!r}, tfds_data_dir={FIXTURE!r},
                         tfds_validation_split="test", frames=4, image_size=32,
                         sampling_rate=2, num_sample=2, num_workers=0, read_threads=1,
                         randaug="", reprob=0.0))
      c.data.update(data)
      return c

    # Pre-training: [batch * num_sample, T, H, W, 3] uint8 clips.
    b = next(make_train_iterator(cfg("pretrain"), process_index=0, process_count=1, seed=0))
    assert set(b) == {{"video"}} and b["video"].shape == (4, 4, 32, 32, 3), b["video"].shape
    assert b["video"].dtype == np.uint8 and b["video"].std() > 5

    # Fine-tuning: the head size and names come from the ClassLabel feature; one
    # epoch (6 videos, 2 a batch) holds every training label once per video.
    c = cfg("finetune")
    ti = info.train_info(c)
    assert (ti.num_videos, ti.num_classes, ti.class_names) == (6, 5, {CLASSES!r}), ti
    it = make_train_iterator(c, process_index=0, process_count=1, seed=0)
    batches = [next(it) for _ in range(3)]
    for b in batches:
      assert b["video"].shape == (4, 4, 32, 32, 3) and b["label"].dtype == np.int32
      assert (b["label"][0::2] == b["label"][1::2]).all()  # num_sample views of one video
    labels = sorted(np.concatenate([b["label"][0::2] for b in batches]).tolist())
    assert labels == [0, 0, 1, 2, 3, 4], labels

    # Validation (split "test", as UCF101 names it) and the multi-view test.
    v = list(pipelines.make_validation_iterator(c, process_index=0, process_count=1))
    ids = np.concatenate([b["video_id"] for b in v])
    assert sorted(ids.tolist()) == list(range(6)), ids
    assert v[0]["video"].shape == (2, 4, 32, 32, 3)
    val_labels = {{int(i): int(l) for b in v for i, l in zip(b["video_id"], b["label"])}}
    c.data.update(test_num_segment=2, test_num_crop=3)
    e = next(pipelines.make_eval_iterator(c, process_index=0, process_count=1))
    assert e["video"].shape == (2 * 6, 4, 32, 32, 3) and (e["view"][:6] == range(6)).all()

    # Two hosts: disjoint slices that together hold every video once.
    seen = collections.Counter()
    for p in range(2):
      for b in pipelines.make_validation_iterator(c, process_index=p, process_count=2):
        assert b["video"].shape[0] == 1  # batch 2 over 2 hosts
        for i, l in zip(b["video_id"], b["label"]):
          if i >= 0:
            seen[int(i)] += 1
            assert val_labels[int(i)] == int(l)
    assert sorted(seen) == list(range(6)) and set(seen.values()) == {{1}}, seen

    # UCF101 as a user names it: 101 classes from its ClassLabel, splits train / test.
    u = cfg("finetune", tfds_name="ucf101/ucf101_1", tfds_data_dir={ucf!r})
    ui = info.train_info(u)
    assert (ui.num_videos, ui.num_classes, ui.class_names[:2]) == \
        (6, 101, ("ApplyEyeMakeup", "ApplyLipstick")), ui
    b = next(make_train_iterator(u, process_index=0, process_count=1, seed=0))
    assert b["video"].shape == (4, 4, 32, 32, 3) and b["label"].max() < 5
    assert len(list(pipelines.make_validation_iterator(u, process_index=0,
                                                       process_count=1))) == 3
    print("tensorflow import attempts blocked:", ATTEMPTS)
    # tfds's Video constructor asked for TensorFlow and got NumPy dtypes instead.
    assert "tensorflow" in ATTEMPTS
  """)
  assert "tensorflow import attempts blocked: ['tensorflow'" in out, out


def test_preparing_with_tfds_without_tensorflow(tmp_path):
  """tfds prepares the Sequence(Image) config without TensorFlow; the Video
  feature cannot even be constructed without it (so the fixture was prepared
  with TensorFlow); both hold the same frames and read the same."""
  _run_without_tensorflow(f"""
    import numpy as np
    import tensorflow_datasets as tfds
    from data_prep import tfds_demo
    from vmae2_jax.data import tfds_source

    b = tfds_demo.prepare({str(tmp_path)!r}, "frames")
    assert b.info.file_format.value == "array_record"
    assert {{k: v.num_examples for k, v in b.info.splits.items()}} == {{"train": 6, "test": 6}}
    try:
      tfds.features.Video(shape=(None, None, None, 3), encoding_format="jpeg")
      raise AssertionError("tfds.features.Video was built without TensorFlow: "
                           "update docs/data.md, preparing may no longer need it")
    except ImportError:
      pass
    for split in ("train", "test"):
      live = tfds_source.TfdsSource("vmae2_demo_videos/frames", split=split,
                                    data_dir={str(tmp_path)!r})
      fixed = tfds_source.TfdsSource({NAME!r}, split=split, data_dir={FIXTURE!r})
      assert len(live) == len(fixed) == 6
      a = sorted((r.label, [bytes(f) for f in r.frames]) for r in map(live.__getitem__, range(6)))
      z = sorted((r.label, [bytes(f) for f in r.frames]) for r in map(fixed.__getitem__, range(6)))
      assert a == z
  """)


def test_fixture_holds_the_demo_frames_as_tfds_stores_them():
  """One JPEG per frame under "video", the ClassLabel under "label": the bytes are
  the demo shards' own, so decoding them equals decoding the shards."""
  demo = {f"{r.header['name']}": r for r in _demo_records("train")}
  src = tfds_source.TfdsSource(NAME, split="train", data_dir=FIXTURE)
  assert len(src) == 6 and src.class_names == CLASSES
  feature = src._source.dataset_info.features["video"]
  assert isinstance(feature, tfds.features.Video)
  assert feature.feature.encoding_format == "jpeg"
  expected = {k: (r.label, [r.frame_bytes(i) for i in range(16)]) for k, r in demo.items()}
  for i in range(len(src)):
    rec = src[i]
    assert isinstance(rec, tfds_source.TfdsRecord), rec
    frames = [bytes(f) for f in rec.frames]
    match = [k for k, (label, fb) in expected.items() if fb == frames]
    assert len(match) == 1 and expected[match[0]][0] == rec.label
    assert (rec.height, rec.width) == (demo[match[0]].height, demo[match[0]].width)
    assert rec.num_frames == 16
    np.testing.assert_array_equal(rec.decode_frames([0, 15]),
                                  demo[match[0]].decode_frames([0, 15]))
  # Grain workers get a pickled source that reopens the data set.
  again = pickle.loads(pickle.dumps(src))
  assert again._source is None and again[0].label == src[0].label


def test_tfds_errors_name_what_to_set(tmp_path):
  with pytest.raises(ValueError, match=r"no split 'validation' \(splits: test, train\); set "
                                       r"config.data.tfds_train_split / tfds_validation_split"):
    tfds_source.TfdsSource(NAME, split="validation", data_dir=FIXTURE)
  with pytest.raises(ValueError, match=r"no feature 'frames' \(features: label, video\); "
                                       r"set config.data.tfds_video_key"):
    tfds_source.TfdsSource(NAME, split="train", data_dir=FIXTURE, video_key="frames")
  # Split arithmetic of tfds works: a slice of the training split.
  assert len(tfds_source.TfdsSource(NAME, split="train[:50%]", data_dir=FIXTURE)) == 3
  # No label feature (an unlabelled set): label -1, no class names.
  src = tfds_source.TfdsSource(NAME, split="test", data_dir=FIXTURE, label_key="action")
  assert src[0].label == -1 and src.class_names is None
  with pytest.raises(Exception, match="vmae2_demo_videos"):
    tfds_source.TfdsSource(NAME, split="train", data_dir=str(tmp_path))
  # Prepared as tfrecord (tfds's default format): no random access, say how to convert.
  import json
  import shutil
  copy = tmp_path / "tfrecord"
  shutil.copytree(FIXTURE, copy)
  info_path = copy / "vmae2_demo_videos" / "video" / "1.0.0" / "dataset_info.json"
  info = json.loads(info_path.read_text())
  info_path.write_text(json.dumps(dict(info, fileFormat="tfrecord")))
  with pytest.raises(ValueError, match=r"prepared as tfrecord, random access needs "
                                       r"array_record: convert it once with `tfds convert_format"):
    tfds_source.TfdsSource(NAME, split="train", data_dir=str(copy))


def test_png_frames_and_their_size():
  import cv2
  rgb = np.zeros((6, 10, 3), np.uint8)
  rgb[..., 0] = 200
  png = cv2.imencode(".png", rgb[..., ::-1])[1].tobytes()
  rec = tfds_source.TfdsRecord(np.array([png, png], dtype=object), 2, "here")
  assert tfds_source.image_size(png) == (6, 10) and (rec.height, rec.width) == (6, 10)
  np.testing.assert_array_equal(rec.decode_frames([1]), rgb[None])
  bad = tfds_source.TfdsRecord([png, b"\x89PNG broken"], 0, "there")
  with pytest.raises(shards.CorruptRecordError, match="there: frame 1 does not decode"):
    bad.decode_frames([1])


def test_demo_builder_examples_are_balanced():
  got = [(k, len(f), l) for k, f, l in tfds_demo.demo_examples("train", 5, 4)]
  assert [l for _, _, l in got] == [0, 1, 2, 3, 4] and {n for _, n, _ in got} == {4}
