"""Decoding one list entry's frames: PyAV first, OpenCV as the fallback, or a
folder of images; frames are resized to a short side on the way out.
Failures raise VideoFailure with the failure report's reason."""

from __future__ import annotations

import os

import numpy as np

from vmae2_jax.data import shards as shard_format

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}


class VideoFailure(Exception):
  """A video that cannot be written; ``reason`` is one of the report's reasons."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}")
    self.reason, self.detail = reason, detail


def target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
  """(h, w) with the short side at ``short_side``; never upscales; 0 keeps the size."""
  s = min(height, width)
  if short_side <= 0 or s <= short_side:
    return height, width
  scale = short_side / s
  if height <= width:
    return short_side, max(1, int(round(width * scale)))
  return max(1, int(round(height * scale))), short_side


def _resize(frame: np.ndarray, short_side: int) -> np.ndarray:
  import cv2
  h, w = target_size(frame.shape[0], frame.shape[1], short_side)
  if (h, w) == frame.shape[:2]:
    return frame
  return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def decode_pyav(path: str, start: int, total: int, short_side: int) -> tuple[list, float]:
  """RGB frames [start, start+total) resized to the short side, and the fps."""
  import av
  frames = []
  with av.open(path) as container:
    if not container.streams.video:
      raise VideoFailure("corrupt", "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    for i, frame in enumerate(container.decode(stream)):
      if i < start:
        continue
      if 0 <= total <= len(frames):
        break
      h, w = target_size(frame.height, frame.width, short_side)
      frames.append(frame.reformat(width=w, height=h, format="rgb24",
                                   interpolation="AREA").to_ndarray())
  return frames, fps


def decode_opencv(path: str, start: int, total: int, short_side: int) -> tuple[list, float]:
  """OpenCV fallback with the same contract as decode_pyav."""
  import cv2
  cap = cv2.VideoCapture(path)
  if not cap.isOpened():
    raise VideoFailure("corrupt", "OpenCV cannot open it")
  fps = float(cap.get(cv2.CAP_PROP_FPS) or 0)
  frames, i = [], 0
  try:
    while True:
      if 0 <= total <= len(frames):
        break
      ok, bgr = cap.read()
      if not ok:
        break
      if i >= start:
        frames.append(_resize(bgr[..., ::-1], short_side))
      i += 1
  finally:
    cap.release()
  return frames, fps


def decode_video(path: str, start: int, total: int, short_side: int) -> tuple[list, float]:
  """PyAV first; OpenCV when PyAV fails or is missing. Raises VideoFailure."""
  errors = []
  for decoder in (decode_pyav, decode_opencv):
    try:
      frames, fps = decoder(path, start, total, short_side)
      if frames or decoder is decode_opencv:
        return frames, fps
      errors.append(f"{decoder.__name__}: no frames")
    except VideoFailure as e:
      errors.append(f"{decoder.__name__}: {e.detail}")
    except Exception as e:  # noqa: BLE001 - any decoder error means try the next one
      errors.append(f"{decoder.__name__}: {type(e).__name__}: {e}")
  if all("no frames" in e for e in errors):
    return [], 0.0
  raise VideoFailure("corrupt", "; ".join(errors))


def read_frame_folder(path: str, start: int, total: int, short_side: int) -> tuple[list, float]:
  """Images of a frame folder in name order, [start, start+total)."""
  names = sorted(n for n in os.listdir(path) if os.path.splitext(n)[1].lower() in IMAGE_EXTS)
  names = names[start:] if total < 0 else names[start:start + total]
  frames = []
  for n in names:
    try:
      with open(os.path.join(path, n), "rb") as f:
        data = f.read()
      if data[:2] == b"\xff\xd8":
        image = shard_format.decode_jpeg(data)
      else:  # PNG, BMP: OpenCV
        import cv2
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
          raise ValueError("undecodable image")
        image = np.ascontiguousarray(image[..., ::-1])
      frames.append(_resize(image, short_side))
    except Exception as e:  # noqa: BLE001
      raise VideoFailure("corrupt", f"frame {n}: {e}") from e
  return frames, 0.0
