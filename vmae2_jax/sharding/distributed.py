"""Multi-controller start-up through jax.distributed (TPU VMs, SLURM, or explicit)."""

from __future__ import annotations

import os

from absl import logging


def maybe_initialize_distributed(cfg=None) -> bool:
  """Calls jax.distributed.initialize when this is a multi-process run.

  Explicit settings (config.distributed.{coordinator_address, num_processes,
  process_id}) win; otherwise JAX's own cluster detection covers TPU VMs and
  SLURM. A single local process needs nothing.
  """
  import jax
  cfg = dict(cfg or {})
  explicit = cfg.get("coordinator_address") or os.environ.get("VMAE2_COORDINATOR")
  if explicit:
    jax.distributed.initialize(
        coordinator_address=explicit,
        num_processes=int(cfg.get("num_processes") or os.environ["VMAE2_NUM_PROCESSES"]),
        process_id=int(cfg.get("process_id") if cfg.get("process_id") is not None
                       else os.environ["VMAE2_PROCESS_ID"]),
        local_device_ids=cfg.get("local_device_ids"))
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True
  in_cluster = ("SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1) or (
      "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ)
  if in_cluster or cfg.get("auto", False):
    jax.distributed.initialize()
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True
  return False
