"""Checkpoints: plain dicts of state_dicts plus config, epoch and history (nanoGPT-style),
written atomically and only ever read with `torch.load(weights_only=True)`."""

from __future__ import annotations

import io
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.atomic import atomic_write
from cnnkit.errors import CheckpointError

RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "history", "config")


def save_checkpoint(path: str | Path, state: dict[str, Any], *also: str | Path) -> None:
    """Write `state` to `path`, then to each of `also`, serialized once. Serialized in memory
    first: torch.save's zip writer turns a failed write (disk full, file too large) into a
    RuntimeError, where a plain write gives the OSError that `atomic_write` reports in one
    line."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for target in (path, *also):
        atomic_write(target, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path, *, for_resume: bool = False) -> dict[str, Any]:
    """Read a checkpoint; any problem is one CheckpointError that names the path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    state = read_weights_only(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a cnnkit checkpoint (no 'model' state)")
    if for_resume:
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path}: cannot resume from it, it lacks {', '.join(missing)} "
                                  f"(it can still be evaluated or used as weights)")
    return state


def read_weights_only(path: Path) -> Any:
    """`torch.load(weights_only=True)` on CPU; any failure is one CheckpointError naming the
    path (shared with cnnkit.models.weights, which reads torchvision-format files)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise CheckpointError(f"{path}: refused: it needs the global {found.group(1)}, which "
                                  f"weights_only loading does not run (the file may carry code)"
                                  ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt: "
                              f"{_first_line(exc)})") from None
    except Exception as exc:  # torch.load raises many kinds on truncated or random bytes
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt: "
                              f"{type(exc).__name__})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def rng_state() -> dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain ints (safe under weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
