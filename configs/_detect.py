"""config.detect's defaults for configs/detect_*.py: ``detect_defaults()``.

Defaults live in configs/common.py (every config carries config.detect, so saved runs
and overrides see the same fields); this module names the helper where the detection
configs look for it.
"""

from configs.common import detect_defaults

__all__ = ["detect_defaults"]
