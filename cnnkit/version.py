"""The installed version, read from the package metadata once, on first use.

The one module that reads it, so that nothing inside the package imports the face
(`cnnkit/__init__.py`) for `__version__`. importlib.metadata alone costs ~70 ms
(`python -X importtime -c "import importlib.metadata as m; m.version('cnnkit')"`), so it is
imported inside `version()`, never at the top.
"""

from __future__ import annotations

from functools import cache


@cache
def version() -> str:
    """cnnkit's version as installed, or "0+unknown" in a source tree never installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("cnnkit")
    except PackageNotFoundError:
        return "0+unknown"
