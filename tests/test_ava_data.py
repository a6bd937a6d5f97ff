"""AVA data: file formats and their one-line errors, keyframe shards from the synthetic
set, the train/test detection iterators, and the on-device colour jitter."""

import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common
from configs._detect import detect_defaults
from data_prep import ava as ava_prep
from data_prep import ava_synthetic
from vmae2_jax.data import transforms
from vmae2_jax.data.ava import boxes as box_ops
from vmae2_jax.data.ava import clips, color, formats, pipeline


# --------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def test_ground_truth_csv_parses_and_rejects_bad_rows_in_one_line(tmp_path):
  good = _write(tmp_path, "gt.csv", "vid1,0902,0.1,0.2,0.5,0.9,12,3\n"
                "vid1,902,0.1,0.2,0.5,0.9,80,3\nvid2,1000,0,0,1.0004,1,5\nvid3,0903\n")
  rows = formats.read_box_csv(good, class_ids=range(1, 81))
  assert [(r.key, r.action_id, r.person_id) for r in rows] == [
      ("vid1,0902", 12, 3), ("vid1,0902", 80, 3), ("vid2,1000", 5, -1), ("vid3,0903", 0, -1)]
  assert rows[2].box == (0.0, 0.0, 1.0, 1.0)  # float noise past 1 is clipped
  assert rows[3].box is None                   # a keyframe listed without action
  bad = {
      "vid1,0902,0.1,0.2,0.5,12\n": "row 1: 6 columns, expected 7 or 8",
      "vid1,0902,0.1,0.2,0.5,0.9,12\nvid1,0902,0.1,zero,0.5,0.9,12\n": "row 2: y1 'zero' is not",
      "vid1,0902,0.1,0.2,1.5,0.9,12\n": "row 1: box (0.1, 0.2, 1.5, 0.9) is outside [0, 1]",
      "vid1,0902,0.6,0.2,0.5,0.9,12\n": "row 1: box (0.6, 0.2, 0.5, 0.9) has x2 < x1",
      "vid1,0902,0.1,0.2,0.5,0.9,81\n": "row 1: action id 81 is not in the label map (ids 1..80)",
      "vid1,09x2,0.1,0.2,0.5,0.9,12\n": "row 1: timestamp '09x2' is not a number",
  }
  for text, message in bad.items():
    path = _write(tmp_path, "bad.csv", text)
    with pytest.raises(formats.AvaFormatError) as e:
      formats.read_box_csv(path, class_ids=range(1, 81))
    assert str(e.value).startswith(f"{path} ") and message in str(e.value)
    assert "\n" not in str(e.value)
  with pytest.raises(formats.AvaFormatError, match="row 1: 7 columns, expected 8"):
    formats.read_box_csv(_write(tmp_path, "det.csv", "v,0902,0,0,1,1,3\n"), detections=True)


def test_exclusions_and_label_maps(tmp_path):
  assert formats.read_exclusions(_write(tmp_path, "ex.csv", "vidA,902\nvidB,0903\n")) == {
      "vidA,0902", "vidB,0903"}
  with pytest.raises(formats.AvaFormatError, match=r"ex2.csv row 2: 3 columns, expected 2"):
    formats.read_exclusions(_write(tmp_path, "ex2.csv", "vidA,902\nvidA,903,1\n"))
  # AVA's multi-line items, a one-line item, and label_id (the ActivityNet list's spelling).
  text = ('item {\n  name: "bend/bow (at the waist)"\n  id: 1\n}\n'
          'item { name: "crouch/kneel" id: 3 }\nitem {\n  name: "dance"\n  label_id: 4\n}\n')
  assert formats.read_label_map(_write(tmp_path, "m.pbtxt", text)) == {
      1: "bend/bow (at the waist)", 3: "crouch/kneel", 4: "dance"}
  with pytest.raises(formats.AvaFormatError, match=r"d.pbtxt line 2: id 1 is listed twice"):
    formats.read_label_map(_write(tmp_path, "d.pbtxt", 'item { name: "a" id: 1 }\n'
                                  'item { name: "b" id: 1 }\n'))
  with pytest.raises(formats.AvaFormatError, match=r"e.pbtxt: no `item"):
    formats.read_label_map(_write(tmp_path, "e.pbtxt", "nothing here\n"))


def test_proposals_pickle(tmp_path):
  path = tmp_path / "p.pkl"
  path.write_bytes(pickle.dumps({"vidA,902": np.array([[0.1, 0.1, 0.5, 0.5, 0.9]]),
                                 "vidB,0903": np.zeros((0, 5)),
                                 "vidC,0904": np.array([[0.2, 0.2, 0.4, 0.4]])}))
  props = formats.read_proposals(path)
  assert sorted(props) == ["vidA,0902", "vidB,0903", "vidC,0904"]
  np.testing.assert_allclose(props["vidC,0904"], [[0.2, 0.2, 0.4, 0.4, 1.0]], rtol=1e-6)
  for raw, message in [({"vidA,902": np.ones((2, 3))}, "key 'vidA,902': array of shape (2, 3)"),
                       ({"vidA,902": [[0, 0, 2, 1, 0.5]]}, "key 'vidA,902' box 0: box (0, 0, 2"),
                       ({"vidA": [[0, 0, 1, 1, 1]]}, "keys must be \"video_id,timestamp\""),
                       ([1, 2], "holds a list, expected a dict")]:
    path.write_bytes(pickle.dumps(raw))
    with pytest.raises(formats.AvaFormatError, match=None) as e:
      formats.read_proposals(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value), str(e.value)
  path.write_bytes(b"not a pickle")
  with pytest.raises(formats.AvaFormatError, match="not a readable pickle"):
    formats.read_proposals(path)


def test_clip_frames_are_the_reference_temporal_crop():
  # The reference loads 32 frames before and 32 from the keyframe (index 32 of 64) and
  # takes frame_start = (64 - 64) // 2 + (4 - 1) // 2 = 1, then every 4th: 1, 5, ..., 61.
  assert (clips.clip_offsets(16, 4) + 32).tolist() == list(range(1, 64, 4))
  assert clips.keyframe_index(902) == 60
  idx = clips.clip_frame_indices(clips.keyframe_index(900), 300)
  assert idx[:8].tolist() == [0] * 8 and idx[8:].tolist() == list(range(1, 30, 4))


# --------------------------------------------------------------------------
# Synthetic set and shards
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
  root = tmp_path_factory.mktemp("ava")
  files = ava_synthetic.write_synthetic_ava(str(root / "set"), train_movies=2, val_movies=1,
                                            scenes=2)
  for split in ("train", "val"):
    args = [f"--frames={files['frames']}", f"--annotations={files[split + '_csv']}",
            f"--label_map={files['label_map']}", f"--out={root / split}"]
    if split == "val":
      args += [f"--proposals={files['val_proposals']}", f"--exclusions={files['exclusions']}"]
    assert ava_prep.main(args) == 0
  files.update(train=str(root / "train"), val=str(root / "val"), root=str(root))
  return files


def _config(synth, **detect):
  c = common.base_config()
  c.detect = detect_defaults()
  c.detect.update(detect)
  c.data.train_path, c.data.val_path = synth["train"], synth["val"]
  c.batch_size = 4
  c.model.num_classes = 0
  return c


def test_synthetic_set_and_dry_run(synth, capsys, tmp_path):
  gt = formats.read_box_csv(synth["train_csv"])
  keys = {r.key for r in gt}
  assert len(keys) == 2 * 2 * 3  # movies x scenes x keyframes per scene
  assert {r.action_id for r in gt} == {1, 2, 3}
  per_key = {k: sum(r.key == k for r in gt) for k in keys}
  assert min(per_key.values()) >= 2  # several persons per keyframe
  assert ava_prep.main([f"--frames={synth['frames']}", f"--annotations={synth['val_csv']}",
                        f"--label_map={synth['label_map']}", f"--out={tmp_path / 'x'}",
                        f"--proposals={synth['val_proposals']}",
                        f"--exclusions={synth['exclusions']}", "--dry_run"]) == 0
  out = capsys.readouterr().out
  assert "[ava dry run] 1 movies (1 as frame folders), 5 keyframes (1 excluded)" in out
  assert "0 keyframes with missing frames" in out
  assert not os.path.exists(tmp_path / "x")


def test_missing_frames_stop_the_build_in_one_line(synth, capsys, tmp_path):
  frames = tmp_path / "frames"
  import shutil
  shutil.copytree(os.path.join(synth["frames"], "synth_val00"), frames / "synth_val00")
  gone = frames / "synth_val00" / "synth_val00_000034.jpg"  # keyframe 902's offset -27
  gone.unlink()
  args = [f"--frames={frames}", f"--annotations={synth['val_csv']}",
          f"--label_map={synth['label_map']}", f"--out={tmp_path / 'out'}"]
  assert ava_prep.main(args) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: 1 keyframes have missing frames: ") and str(gone) in err
  assert "synth_val00,0902" in err and "\n" not in err
  assert not os.path.exists(tmp_path / "out")
  assert ava_prep.main(args + ["--dry_run"]) == 0
  assert f"missing: {gone}: missing (keyframe synth_val00,0902)" in capsys.readouterr().out
  assert ava_prep.main(args + ["--skip_missing"]) == 0
  kset = pipeline.KeyframeSet(str(tmp_path / "out"), "test")
  assert "synth_val00,0902" not in kset.keys and len(kset.keys) == 5


def test_unknown_action_id_stops_the_build(synth, capsys, tmp_path):
  csv = _write(tmp_path, "gt.csv", "synth_val00,0902,0.1,0.1,0.5,0.5,1\n"
               "synth_val00,0902,0.1,0.1,0.5,0.5,9\n")
  assert ava_prep.main([f"--frames={synth['frames']}", f"--annotations={csv}",
                        f"--label_map={synth['label_map']}", f"--out={tmp_path / 'o'}"]) == 2
  err = capsys.readouterr().err.strip()
  assert err == f"error: {csv} row 2: action id 9 is not in the label map (ids 1..3)"


# --------------------------------------------------------------------------
# Iterators
# --------------------------------------------------------------------------


def _expected_train_clip(rec, transform, seed_seq):
  """The training clip computed step by step from the record (independently of the pipeline's
  helpers), with the pipeline's random draws replayed."""
  ava = rec.header["ava"]
  frames = np.stack([transforms.resize_short_side(rec.decode_frames([i]), 256)[0]
                     for i in range(rec.num_frames)])
  h, w = frames.shape[1:3]
  rng = np.random.default_rng(seed_seq)
  x0, y0 = int(rng.random() * (w - 224)), int(rng.random() * (h - 224))
  flipped = rng.random() < 0.5
  b = np.array(ava["boxes"]) * [w, h, w, h] - [x0, y0, x0, y0]
  b = np.clip(b, 0, 224)
  if flipped:
    b = np.stack([224 - b[:, 2], b[:, 1], 224 - b[:, 0], b[:, 3]], 1)
  clip = frames[:, y0:y0 + 224, x0:x0 + 224]
  return (clip[:, :, ::-1] if flipped else clip), b, flipped


def test_train_clip_boxes_follow_crop_and_flip(synth):
  c = _config(synth, box_jitter=())
  kset = pipeline.KeyframeSet(c.data.train_path, "t")
  transform = pipeline.DetectTrainTransform.from_config(c, kset.num_classes(c))
  seen_flips = set()
  for seed in range(6):
    element = kset.source[seed]
    out = transform(element, np.random.default_rng(seed))
    from vmae2_jax.data import shards
    rec = shards.parse_record(*element)
    clip, want, flipped = _expected_train_clip(rec, transform, seed)
    seen_flips.add(flipped)
    n = int(out["box_mask"][0].sum())
    assert n == len(want) and out["boxes"].shape == (1, 32, 4)
    np.testing.assert_allclose(out["boxes"][0, :n], want, atol=1e-3)
    np.testing.assert_array_equal(out["video"][0], clip)
    labels = out["labels"][0, :n]
    assert labels.sum(1).tolist() == [len(a) for a in rec.header["ava"]["actions"]]
  assert seen_flips == {True, False}


def test_train_iterator_batches_jitter_and_resume(synth):
  c = _config(synth)
  it = pipeline.make_detect_train_iterator(c, process_index=0, process_count=1, seed=3)
  first = next(it)
  assert {k: (v.shape, v.dtype) for k, v in first.items()} == {
      "video": ((4, 16, 224, 224, 3), np.uint8), "boxes": ((4, 32, 4), np.float32),
      "box_mask": ((4, 32), bool), "labels": ((4, 32, 3), np.float32)}
  valid = first["boxes"][first["box_mask"]]
  assert (valid >= 0).all() and (valid <= 224).all()
  assert ((valid[:, 2] - valid[:, 0]) >= 1).all() and ((valid[:, 3] - valid[:, 1]) >= 1).all()
  assert (first["labels"][first["box_mask"]].sum(-1) >= 1).all()
  assert not first["labels"][~first["box_mask"]].any()
  state = it.get_state()
  ahead = [next(it) for _ in range(2)]
  again = pipeline.make_detect_train_iterator(c, process_index=0, process_count=1, seed=3)
  again.set_state(state)
  for want in ahead:
    got = next(again)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])


def test_box_jitter_is_the_reference_range():
  rng = np.random.default_rng(0)
  b = np.array([[100.0, 50.0, 200.0, 250.0]] * 2000, np.float32)  # 100 wide, 200 high
  j = box_ops.jitter(b, 400, 400, rng)
  d = j - b
  # x1 moves by [-0.2, 0.1] x width, y1 by [-0.1, 0.05] x height; x2/y2 mirrored.
  for col, lo, hi in ((0, -20, 10), (1, -20, 10), (2, -10, 20), (3, -10, 20)):
    assert lo - 1e-3 <= d[:, col].min() < lo + 1 and hi - 1 < d[:, col].max() <= hi + 1e-3
  w = box_ops.widen(jnp.array([[[100.0, 50.0, 200.0, 250.0], [0, 0, 50, 40]]]),
                    jnp.array([[256, 320]]))
  np.testing.assert_allclose(np.asarray(w[0]), [[95, 45, 205, 255], [0, 0, 52.5, 41]])


def test_eval_iterator_buckets_proposals_and_hosts(synth):
  c = _config(synth)
  it = pipeline.make_detect_eval_iterator(c, process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == it.num_batches == 2  # 5 keyframes (one excluded of 6), batches of 4
  b = batches[0]
  # 64 x 80 frames -> short side 256 -> 256 x 320, padded to the 256 x 352 bucket.
  assert b["video"].shape == (4, 16, 256, 352, 3) and b["boxes"].shape == (4, 64, 4)
  assert b["valid_hw"].tolist() == [[256, 320]] * 4
  assert b["frame_size"].tolist() == [[64, 80]] * 4
  assert not b["video"][:, :, :, 320:].any()
  keys = [it.keyframes[k] for bb in batches for k in bb["keyframe"] if k >= 0]
  assert len(keys) == 5 and ("synth_val00", 902) in keys
  assert batches[1]["keyframe"].tolist()[1:] == [-1, -1, -1]
  assert not batches[1]["box_mask"][1:].any()
  props = formats.read_proposals(synth["val_proposals"])
  for bb in batches:
    for row, k in enumerate(bb["keyframe"]):
      if k < 0:
        continue
      p = props[formats.image_key(*it.keyframes[k])]
      p = p[p[:, 4] >= 0.8]
      p = p[np.argsort(-p[:, 4], kind="stable")]
      n = int(bb["box_mask"][row].sum())
      assert n == len(p) >= 2
      np.testing.assert_allclose(bb["scores"][row, :n], p[:, 4])
      back = box_ops.to_normalised(bb["boxes"][row:row + 1, :n], bb["valid_hw"][row:row + 1])
      np.testing.assert_allclose(back[0], p[:, :4], atol=1e-5)
      assert (bb["labels"][row, :n].sum(-1) == 1).all()  # each proposal sits on one person
  # Two hosts: the same number of batches, every keyframe once.
  hosts = [pipeline.make_detect_eval_iterator(c, process_index=p, process_count=2) for p in (0, 1)]
  c2 = [list(h) for h in hosts]
  assert len(c2[0]) == len(c2[1]) == hosts[0].num_batches
  seen = sorted(int(k) for bs in c2 for bb in bs for k in bb["keyframe"] if k >= 0)
  assert seen == sorted(int(k) for bb in batches for k in bb["keyframe"] if k >= 0)


def test_eval_on_ground_truth_boxes_and_bad_configs(synth):
  c = _config(synth, test_boxes="groundtruth")
  b = next(pipeline.make_detect_eval_iterator(c, process_index=0, process_count=1))
  assert (b["scores"][b["box_mask"]] == 1).all()
  assert (b["labels"][b["box_mask"]].sum(-1) == 1).all()
  with pytest.raises(pipeline.DetectDataError, match=r"fits none of config.detect.buckets"):
    pipeline.make_detect_eval_iterator(_config(synth, buckets=((256, 256),)),
                                       process_index=0, process_count=1)
  c = _config(synth)
  c.data.frames = 8
  with pytest.raises(pipeline.DetectDataError, match=r"holds clips of 16 frames at stride 4; "
                     r"config.data.frames=8"):
    pipeline.make_detect_train_iterator(c, process_index=0, process_count=1, seed=0)
  c = _config(synth)
  c.data.train_path = "demo"
  with pytest.raises(pipeline.DetectDataError, match=r"demo: not AVA keyframe shards"):
    pipeline.make_detect_train_iterator(c, process_index=0, process_count=1, seed=0)


# --------------------------------------------------------------------------
# Colour jitter
# --------------------------------------------------------------------------


def test_color_jitter_is_the_reference_hsv_shift_by_hand():
  assert color.jitter_bounds() == (10, 26, 26)  # round(20 / 2), round(0.1 * 255) twice
  pixels = jnp.array([[255, 0, 0], [255, 0, 0], [200, 100, 100], [200, 100, 100]], jnp.uint8)
  shifts = jnp.array([[10, 0, 0], [-10, 0, 0], [0, 0, -26], [0, 26, 0]])
  out = np.asarray(jax.jit(color.hsv_shift)(pixels.reshape(4, 1, 1, 1, 3), shifts)).reshape(4, 3)
  # Hue +10 OpenCV units = +20 degrees: red -> (255, 255 * 20 / 60, 0); -10 wraps to 340.
  # (200, 100, 100) has S = 0.5, V = 200: V - 26 -> (174, 87, 87); S + 26/255 lowers the
  # two smaller channels to 200 * (1 - 0.5 - 26/255) = 79.6.
  low = 200 * (0.5 - 26 / 255)
  np.testing.assert_allclose(out, [[255, 85, 0], [255, 0, 85], [174, 87, 87], [200, low, low]],
                             atol=1e-3)

  @jax.jit
  def jitter_and_replay(video, key):
    # One draw per clip from [-bound, bound], every frame of a clip shifted alike.
    bounds = jnp.array([10, 26, 26])
    replay = jax.random.randint(key, (video.shape[0], 3), -bounds, bounds + 1)
    expected = jnp.clip(jnp.round(color.hsv_shift(video, replay)), 0, 255).astype(jnp.uint8)
    return color.color_jitter(video, key), expected, replay

  video = jax.random.randint(jax.random.key(1), (3, 4, 5, 6, 3), 0, 256).astype(jnp.uint8)
  jittered, expected, replay = jitter_and_replay(video, jax.random.key(0))
  assert jittered.dtype == jnp.uint8 and jittered.shape == video.shape
  np.testing.assert_array_equal(np.asarray(jittered), np.asarray(expected))
  assert len({tuple(r) for r in np.asarray(replay).tolist()}) == 3


def _motion_baseline_map(synth, single_frame: bool) -> tuple[float, dict]:
  """Frame mAP of a hand-made motion feature (how far the bright object's centre travels in
  x and in y over the clip) on the held-out keyframes, through the test pipeline, detection
  rows and the evaluator."""
  from vmae2_jax.evaluation import ava as ava_eval
  it = pipeline.make_detect_eval_iterator(_config(synth), process_index=0, process_count=1)
  rows = []
  for b in it:
    probs = np.zeros(b["labels"].shape, np.float32)
    for i, n in zip(*np.nonzero(b["box_mask"])):
      x1, y1, x2, y2 = np.round(b["boxes"][i, n]).astype(int)
      video = b["video"][i, 8:9] if single_frame else b["video"][i]
      patch = video[:, y1:y2, x1:x2].mean(-1)          # [T, h, w]
      mask = patch > 110                                # the object, not the background
      yy, xx = np.mgrid[0:patch.shape[1], 0:patch.shape[2]]
      count = np.maximum(mask.sum((1, 2)), 1)
      spread_x = np.std((mask * xx).sum((1, 2)) / count)
      spread_y = np.std((mask * yy).sum((1, 2)) / count)
      moving = max(spread_x, spread_y) > 2.0
      probs[i, n, (0 if spread_x > spread_y else 1) if moving else 2] = 1.0
    rows += ava_eval.detection_rows(b, probs, it.keyframes, min_score=1e-6)
  assert len(rows) >= 10
  gt = formats.read_box_csv(synth["val_csv"])
  return ava_eval.frame_map(gt, rows, exclusions=formats.read_exclusions(synth["exclusions"]),
                            class_ids=formats.read_label_map(synth["label_map"]))


def test_motion_inside_the_boxes_tells_the_actions_apart(synth):
  mean_ap, per_class = _motion_baseline_map(synth, single_frame=False)
  assert mean_ap >= 0.9, per_class
  # One frame shows no motion: everything looks still, the moving classes score 0.
  mean_ap, per_class = _motion_baseline_map(synth, single_frame=True)
  moving = [ap for c, ap in per_class.items() if c != 3 and not np.isnan(ap)]
  assert moving and max(moving) == 0.0 and mean_ap < 0.6, per_class


def test_per_second_clips_give_the_frame_folders_clip(synth, tmp_path):
  # The reference's layout: <video>/<t>.mp4 holding second t. Cut the synthetic movie into
  # such clips and build again: the same frames (up to the codec) at the same offsets.
  from data_prep import generated
  from vmae2_jax.data import shards
  folder = os.path.join(synth["frames"], "synth_val00")
  names = sorted(os.listdir(folder))
  frames = np.stack([shards.decode_jpeg(open(os.path.join(folder, n), "rb").read())
                     for n in names])
  (tmp_path / "clips" / "synth_val00").mkdir(parents=True)
  for k in range(len(frames) // clips.FPS):
    generated.write_mp4(str(tmp_path / "clips" / "synth_val00" / f"{900 + k}.mp4"),
                        frames[k * clips.FPS:(k + 1) * clips.FPS], fps=clips.FPS)
  csv = _write(tmp_path, "gt.csv", "synth_val00,0903,0.1,0.1,0.5,0.5,1\n")
  for name, root in (("from_clips", tmp_path / "clips"), ("from_frames", synth["frames"])):
    assert ava_prep.main([f"--frames={root}", f"--annotations={csv}",
                          f"--label_map={synth['label_map']}", f"--out={tmp_path / name}"]) == 0
  a, b = (shards.parse_record(*shards.ShardSource(str(tmp_path / n))[0])
          for n in ("from_clips", "from_frames"))
  assert a.header["ava"]["frame_offsets"] == b.header["ava"]["frame_offsets"] == \
      list(range(-31, 30, 4))
  diff = np.abs(a.decode_frames(range(16)).astype(int) - b.decode_frames(range(16)).astype(int))
  assert diff.mean() < 6, diff.mean()


def test_build_from_and_into_a_bucket(gcs_bucket, tmp_path):
  from vmae2_jax import paths
  files = ava_synthetic.write_synthetic_ava(str(tmp_path / "set"), train_movies=0, val_movies=1,
                                            scenes=1)
  src = paths.join(gcs_bucket, "set")
  paths.copy_tree(str(tmp_path / "set"), src)
  inputs = {"frames": files["frames"], "annotations": files["val_csv"],
            "label_map": files["label_map"], "proposals": files["val_proposals"],
            "exclusions": files["exclusions"]}
  local_args = [f"--{k}={v}" for k, v in inputs.items()]
  bucket_args = [f"--{k}={paths.join(src, os.path.relpath(v, tmp_path / 'set'))}"
                 for k, v in inputs.items()]
  out = paths.join(gcs_bucket, "shards")
  assert ava_prep.main(bucket_args + [f"--out={out}"]) == 0
  assert ava_prep.main(local_args + [f"--out={tmp_path / 'local'}"]) == 0
  batches = []
  for val_path in (out, str(tmp_path / "local")):
    c = _config({"train": "", "val": val_path})
    batches.append(list(pipeline.make_detect_eval_iterator(c, process_index=0, process_count=1)))
  assert len(batches[0]) == len(batches[1]) == 1  # 3 keyframes, one excluded
  for k in batches[1][0]:
    np.testing.assert_array_equal(batches[0][0][k], batches[1][0][k])


def test_ava_data_bench_prints_its_numbers(tmp_path, capsys):
  import json
  from vmae2_jax.bench import __main__ as bench
  assert bench.main(["ava_data", "--height=64", "--width=112", "--movies=1", "--scenes=1",
                     "--batches=2", "--batch=2", f"--workdir={tmp_path}", "--json"]) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result["train_keyframes"] == 3 and result["bytes_per_keyframe"] > 1000
  assert result["train"]["keyframes"] == 4 and result["test"]["keyframes"] >= 3
  assert result["train"]["keyframes_per_s_per_core"] > 0


def test_a_rerun_keeps_the_shards_an_interrupted_build_finished(synth, tmp_path):
  out = tmp_path / "out"
  args = [f"--frames={synth['frames']}", f"--annotations={synth['val_csv']}",
          f"--label_map={synth['label_map']}", f"--out={out}", "--keyframes_per_shard=2"]
  assert ava_prep.main(args) == 0
  manifest = (out / "manifest.json").read_text()
  names = sorted(n for n in os.listdir(out) if n.endswith(".array_record"))
  assert len(names) == 3
  kept = os.stat(out / names[0]).st_mtime_ns
  os.remove(out / names[2])               # killed before the last shard was renamed
  (out / "manifest.json").unlink()
  assert ava_prep.main(args) == 0
  assert os.stat(out / names[0]).st_mtime_ns == kept and os.path.exists(out / names[2])
  assert (out / "manifest.json").read_text() == manifest
  # Other options rebuild every shard.
  assert ava_prep.main(args + ["--quality=80"]) == 0
  assert os.stat(out / names[0]).st_mtime_ns != kept


def test_other_proposals_replace_the_shards_own(synth, tmp_path):
  props = formats.read_proposals(synth["val_proposals"])
  key = sorted(props)[1]
  mine = {key: np.array([[0.25, 0.25, 0.75, 0.75, 0.95], [0, 0, 0.5, 0.5, 0.5]], np.float32)}
  formats.write_proposals(tmp_path / "mine.pkl", mine)
  it = pipeline.make_detect_eval_iterator(_config(synth, proposals=str(tmp_path / "mine.pkl")),
                                          process_index=0, process_count=1)
  batches = list(it)
  assert len(batches) == 1 and batches[0]["keyframe"].tolist()[1:] == [-1, -1, -1]
  assert formats.image_key(*it.keyframes[batches[0]["keyframe"][0]]) == key
  assert batches[0]["box_mask"][0].sum() == 1  # the 0.5 box is under person_score
  np.testing.assert_allclose(batches[0]["boxes"][0, 0], [80, 64, 240, 192])  # of 320 x 256
  with pytest.raises(pipeline.DetectDataError, match=r"config.detect.test_boxes='gt'"):
    pipeline.make_detect_eval_iterator(_config(synth, test_boxes="gt"), process_index=0,
                                       process_count=1)
