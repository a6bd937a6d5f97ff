"""A small synthetic set in AVA's formats, whose actions only motion tells apart.

  python -m data_prep.ava_synthetic --out=DIR [--train_movies=3] [--val_movies=1]
      [--scenes=4] [--height=64] [--width=80] [--seed=0]

Writes, as AVA lays its files out:
  DIR/frames/<video>/<video>_%06d.jpg       30 fps, frame 1 at second 900
  DIR/annotations/ava_{train,val}.csv       video,timestamp,x1,y1,x2,y2,action,person
  DIR/annotations/action_list.pbtxt         1 "move left-right", 2 "move up-down", 3 "stand still"
  DIR/annotations/{train,val}_proposals.pkl GT boxes with noise, scores 0.85..1, plus
                                            low-score (< 0.8) clutter boxes
  DIR/annotations/val_excluded_timestamps.csv   one held-out keyframe

Each movie is a run of 5-second scenes. A scene holds two or three "persons"
(discs or squares of random colours on a still, noisy background) doing
different actions, in square boxes (about 0.3 of the frame, the same shape
whatever the action, so the box gives nothing away); a person oscillates
left-right (action 1), up-down (2) or stays still (3) for the whole scene.
Keyframes are the scene's seconds 2, 3 and 4, whose clips (16 frames at
stride 4, +-1 s) stay inside the scene. The
set is a pure function of the seed; held-out movies share no scene with the
training ones.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from vmae2_jax.data import shards as shard_format
from vmae2_jax.data.ava import clips, formats

ACTIONS = {1: "move left-right", 2: "move up-down", 3: "stand still"}
SCENE_SECONDS = 5
KEY_SECONDS = (2, 3, 4)       # keyframes whose whole clip lies inside the scene
MAX_PERSONS = 3


def _scene(rng: np.random.Generator, h: int, w: int):
  """Persons of one scene: (action, shape, colour, centre y, centre x, amplitude, radius,
  period in frames, phase)."""
  n = int(rng.integers(2, MAX_PERSONS + 1))
  slots = rng.permutation(MAX_PERSONS)[:n]  # left, middle, right thirds: boxes never overlap
  radius = max(3.0, 0.08 * min(h, w))
  amp = radius
  half = radius + amp + 1
  actions = rng.permutation(sorted(ACTIONS))[:n]  # distinct actions: every scene shows a contrast
  persons = []
  for s, action in zip(slots, actions):
    # the box (half a side around the centre) stays inside frames whose thirds are narrow
    cx = float(np.clip((s + 0.5) * w / MAX_PERSONS + rng.uniform(-1, 1), half, w - half))
    cy = rng.uniform(half, h - half)
    persons.append(dict(action=int(action), shape=int(rng.integers(2)),
                        colour=rng.uniform(140, 255, 3), cy=cy, cx=cx, amp=amp, radius=radius,
                        period=rng.uniform(18, 30), phase=rng.uniform(0, 2 * np.pi),
                        half=half))
  return persons


def _draw(persons, background: np.ndarray, frame: int) -> np.ndarray:
  h, w = background.shape[:2]
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  img = background.copy()
  for p in persons:
    off = p["amp"] * np.sin(2 * np.pi * frame / p["period"] + p["phase"])
    cy = p["cy"] + (off if p["action"] == 2 else 0.0)
    cx = p["cx"] + (off if p["action"] == 1 else 0.0)
    if p["shape"]:
      dist = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
    else:
      dist = np.hypot(yy - cy, xx - cx)
    alpha = np.clip(p["radius"] + 0.5 - dist, 0, 1)[..., None]  # anti-aliased edge
    img = img * (1 - alpha) + p["colour"] * alpha
  return np.clip(img, 0, 255).astype(np.uint8)


def box_of(p, h: int, w: int) -> tuple[float, float, float, float]:
  """The square box around a person's whole motion range, normalised."""
  return formats.check_box([(p["cx"] - p["half"]) / w, (p["cy"] - p["half"]) / h,
                            (p["cx"] + p["half"]) / w, (p["cy"] + p["half"]) / h], "synthetic")


def write_movie(folder: str, video_id: str, scenes: int, rng: np.random.Generator, h: int,
                w: int) -> list[tuple[int, list]]:
  """Frames of one movie; returns (keyframe timestamp, persons) for its annotated keyframes."""
  os.makedirs(os.path.join(folder, video_id), exist_ok=True)
  annotated = []
  per_scene = SCENE_SECONDS * clips.FPS
  for s in range(scenes):
    persons = _scene(rng, h, w)
    background = (rng.uniform(10, 70, 3) + rng.normal(0, 4, (h, w, 3))).astype(np.float32)
    for f in range(per_scene):
      index = s * per_scene + f
      path = os.path.join(folder, video_id, f"{video_id}_{index + 1:06d}.jpg")
      with open(path, "wb") as out:
        out.write(shard_format.encode_jpeg(_draw(persons, background, f), 95))
    for k in KEY_SECONDS:
      annotated.append((clips.FIRST_SECOND + s * SCENE_SECONDS + k, persons))
  return annotated


def write_synthetic_ava(out: str, *, train_movies: int = 3, val_movies: int = 1,
                        scenes: int = 4, height: int = 64, width: int = 80,
                        seed: int = 0) -> dict[str, str]:
  """Writes the set (module docstring); returns the paths data_prep.ava and the evaluator
  take: frames, train_csv, val_csv, label_map, train_proposals, val_proposals, exclusions."""
  rng = np.random.default_rng(seed)
  ann = os.path.join(out, "annotations")
  frames = os.path.join(out, "frames")
  os.makedirs(ann, exist_ok=True)
  result = {"frames": frames, "label_map": os.path.join(ann, "action_list.pbtxt"),
            "exclusions": os.path.join(ann, "val_excluded_timestamps.csv")}
  with open(result["label_map"], "w") as f:
    for i, name in ACTIONS.items():
      f.write(f'item {{\n  name: "{name}"\n  id: {i}\n}}\n')
  excluded = []
  for split, count in (("train", train_movies), ("val", val_movies)):
    rows, proposals = [], {}
    for m in range(count):
      video_id = f"synth_{split}{m:02d}"
      for ts, persons in write_movie(frames, video_id, scenes, rng, height, width):
        boxes = []
        for person_id, p in enumerate(persons):
          box = box_of(p, height, width)
          rows.append(formats.BoxRow(video_id, ts, box, p["action"], person_id=person_id))
          noisy = np.clip(np.array(box) + rng.normal(0, 0.01, 4), 0, 1)
          boxes.append([*noisy, rng.uniform(0.85, 1.0)])
        for _ in range(int(rng.integers(1, 3))):  # clutter the 0.8 threshold removes
          x1, y1 = rng.uniform(0, 0.7, 2)
          boxes.append([x1, y1, x1 + rng.uniform(0.1, 0.3), y1 + rng.uniform(0.1, 0.3),
                        rng.uniform(0.05, 0.7)])
        proposals[formats.image_key(video_id, ts)] = np.clip(np.array(boxes, np.float32), 0, 1)
    result[f"{split}_csv"] = os.path.join(ann, f"ava_{split}.csv")
    result[f"{split}_proposals"] = os.path.join(ann, f"{split}_proposals.pkl")
    formats.write_box_csv(result[f"{split}_csv"], rows, detections=False)
    formats.write_proposals(result[f"{split}_proposals"], proposals)
    if split == "val" and rows:
      excluded.append(rows[-1].key)
  with open(result["exclusions"], "w") as f:
    f.writelines(f"{k}\n" for k in excluded)
  return result


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m data_prep.ava_synthetic",
                              description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--train_movies", type=int, default=3)
  p.add_argument("--val_movies", type=int, default=1)
  p.add_argument("--scenes", type=int, default=4)
  p.add_argument("--height", type=int, default=64)
  p.add_argument("--width", type=int, default=80)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  written = write_synthetic_ava(a.out, train_movies=a.train_movies, val_movies=a.val_movies,
                                scenes=a.scenes, height=a.height, width=a.width, seed=a.seed)
  for k, v in written.items():
    print(f"{k}: {v}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
