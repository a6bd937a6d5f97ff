"""PyTorch <-> vmae2_jax checkpoint conversion (the public facade is vmae2_jax.convert).

Modules: torch_io (files), detect (flavour and size), layouts (key rules),
mapping (strict import/export), surgery (stage changes), labels (Kinetics
maps), init_from (trainer start), parity (reference-convention forward),
api (import/export/load), cli.
"""
