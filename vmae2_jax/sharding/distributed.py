"""Multi-controller start-up through jax.distributed (TPU VMs, SLURM, or explicit)."""

from __future__ import annotations

import os

from absl import logging


def _explicit_settings(cfg: dict) -> dict | None:
  """Coordinator settings from config.distributed, else VMAE2_* env; None if neither."""
  address = cfg.get("coordinator_address") or os.environ.get("VMAE2_COORDINATOR", "")
  if not address:
    return None
  num = int(cfg.get("num_processes") or 0) or int(os.environ.get("VMAE2_NUM_PROCESSES", 0))
  pid = cfg.get("process_id")
  pid = int(pid) if pid is not None and int(pid) >= 0 else int(
      os.environ.get("VMAE2_PROCESS_ID", -1))
  if num < 1 or not 0 <= pid < num:
    raise ValueError(
        f"coordinator {address!r} needs config.distributed.num_processes (or "
        f"VMAE2_NUM_PROCESSES) >= 1 and process_id (or VMAE2_PROCESS_ID) in [0, {num}); "
        f"got {num} and {pid}")
  ids = cfg.get("local_device_ids") or os.environ.get("VMAE2_LOCAL_DEVICE_IDS")
  if isinstance(ids, str):
    ids = [int(i) for i in ids.split(",") if i.strip()]
  return dict(coordinator_address=address, num_processes=num, process_id=pid,
              local_device_ids=list(ids) if ids else None)


def maybe_initialize_distributed(cfg=None) -> bool:
  """Calls jax.distributed.initialize when this is a multi-process run.

  Explicit settings (config.distributed.{coordinator_address, num_processes,
  process_id}, or the VMAE2_COORDINATOR / VMAE2_NUM_PROCESSES /
  VMAE2_PROCESS_ID environment) win; otherwise JAX's own cluster detection
  covers TPU VMs and SLURM (config.distributed.auto forces it). A single
  local process needs nothing. Must run before anything touches a device.
  """
  import jax
  cfg = dict(cfg or {})
  explicit = _explicit_settings(cfg)
  in_cluster = ("SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1) or (
      "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ)
  if explicit is None and not (in_cluster or cfg.get("auto", False)):
    return False
  if "cpu" in os.environ.get("JAX_PLATFORMS", "").split(","):
    # Cross-process collectives on CPU (local multi-process runs and tests).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**(explicit or {}))
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True
