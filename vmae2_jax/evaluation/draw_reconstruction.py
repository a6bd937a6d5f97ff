"""Draw the reconstruction picture for a run, on request.

  python -m vmae2_jax.evaluation.draw_reconstruction --workdir=DIR [--step=N] [--num_clips=3]

Reads DIR/config.json and the checkpoint (latest unless --step), writes
DIR/reconstruction_step<N>.png: per clip, original / masked input / reconstruction.
"""

from __future__ import annotations

import jax
from absl import app, flags

from configs.common import config_from_json
from vmae2_jax import paths
from vmae2_jax.checkpointing import Checkpointer
from vmae2_jax.evaluation.reconstruction import write_reconstruction_grid
from vmae2_jax.training.experiment import setup

_WORKDIR = flags.DEFINE_string("workdir", None, "A pre-training run's workdir.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_NUM_CLIPS = flags.DEFINE_integer("num_clips", 3, "Clips (rows of three) to draw.")
_OUT = flags.DEFINE_string("out", None, "PNG path (default: in the workdir).")
_FIRST = flags.DEFINE_list("first_classes", None, "Class names shown first (default: the "
                           "run's config.reconstruction.first_classes).")


def draw(workdir: str, step: int | None = None, num_clips: int = 3, out: str | None = None,
         first_classes=None) -> str:
  config = config_from_json(paths.join(workdir, "config.json"))
  if first_classes is not None:
    config.reconstruction.first_classes = tuple(first_classes)
  ckpt = Checkpointer(paths.join(workdir, "checkpoints"), save_every=1)
  step = step if step is not None else ckpt.latest_step()
  if step is None:
    raise FileNotFoundError(f"{workdir}/checkpoints holds no complete checkpoint")
  config.mesh.update({"data": 1, "fsdp": 1, "tensor": 1})
  exp = setup(config, jax.devices()[:1])
  state, _, _ = ckpt.restore(step, exp.abstract_state)
  ckpt.close()
  path = out or paths.join(workdir, f"reconstruction_step{step}.png")
  return write_reconstruction_grid(
      config, exp.graphdef, jax.device_get(state.params), path, num_clips=num_clips,
      title=f"{paths.basename(workdir.rstrip('/'))}, step {step}")


def main(argv):
  del argv
  print(draw(_WORKDIR.value, _STEP.value, _NUM_CLIPS.value, _OUT.value, _FIRST.value))


if __name__ == "__main__":
  flags.mark_flag_as_required("workdir")
  app.run(main)
