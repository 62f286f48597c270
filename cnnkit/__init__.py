"""cnnkit: convolutional networks from YAML configs, trained, checkpointed and made visible.

The package face is light: `import cnnkit` and `cnnkit --help` import neither torch nor
matplotlib. The public names below are imported on first use (PEP 562), and `__version__` is
read on first use too (cnnkit/version.py). This module is only the face: nothing inside the
package imports it (tests/test_house.py).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cnnkit.config import load_config
    from cnnkit.infer.model import load
    from cnnkit.models.builder import build_model
    from cnnkit.training.trainer import train

__all__ = ["__version__", "build_model", "load", "load_config", "train"]

# public name -> the module that defines it; `train` is the function, not a subpackage
# (the loop's package is `cnnkit.training` so that it never shadows this name)
_LAZY = {
    "build_model": "cnnkit.models.builder",
    "load": "cnnkit.infer.model",  # a checkpoint or run directory -> a ready Predictor
    "load_config": "cnnkit.config",
    "train": "cnnkit.training.trainer",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from cnnkit.version import version

        value = version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
    globals()[name] = value  # later lookups find it without coming back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
