"""The checkpoint file format, and the one door through which every checkpoint is read.

A checkpoint is a plain dict of state_dicts plus config, epoch and history (nanoGPT-style),
serialized once by `torch.save`, then followed by a trailer, MAGIC + SHA-256 of every byte
before it (the zip's headers and padding included, which a digest inside the pickle could not
see). Reading checks the trailer, then `torch.load(weights_only=True)` (a digest proves
integrity, not origin), then the structure of every key it knows, so a damaged or crafted file
is one CheckpointError naming it, never a traceback from deep in torch.

Files without a trailer are either weight files from elsewhere (torchvision `.pth`), which
load as they are, or cnnkit checkpoints written before the trailer (no `format` key), which
load with a one-line warning. A file whose content says it has a trailer (`format` >= 2) but
whose trailer is missing or not the marker is damaged: the check fails closed. A file with
both its trailer and its `format` key removed cannot be told from a genuine format-1 file:
it loads with that warning, and its structure is still checked.

Resources are bounded before they are used: only a regular file is opened (O_NONBLOCK, then
fstat: a FIFO cannot block, /dev/zero is refused), the digest is computed on the file in
chunks (no size cap: a VGG `last.pt` with Adam state is over 1.5 GB), torch reads the
tensors from the file itself, and every record of the zip must be stored as it is, within the
file's bytes (a deflated record of 4 KB could declare gigabytes).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle
import random
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.atomic import Window, atomic_write, sha256_of
from cnnkit.errors import CheckpointError
from cnnkit.userfiles import open_regular
from cnnkit.validate import MAX_INPUT_VALUES
from cnnkit.version import version

FORMAT = 2  # 1: no trailer, mean/std beside the weights; 2: trailer, `preprocessing`
MAGIC = b"CNNKITSHA256"
TRAILER = len(MAGIC) + 32  # marker + SHA-256 digest
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "history", "config")


def save_checkpoint(path: str | Path, state: dict[str, Any], *also: str | Path) -> None:
    """Write `state` to `path`, then to each of `also`, serialized once, stamped with the
    format and the cnnkit and torch versions, and followed by the digest trailer. Serialized in
    memory first: torch.save's zip writer turns a failed write (disk full, file too large)
    into a RuntimeError, where a plain write gives the OSError that `atomic_write` reports in
    one line."""
    stamped = {**state, "format": FORMAT, "cnnkit_version": version(),
               "torch_version": torch.__version__.split("+")[0]}
    buffer = io.BytesIO()
    torch.save(stamped, buffer)
    buffer.write(MAGIC + hashlib.sha256(buffer.getbuffer()).digest())  # ~2 ms per 10 MB
    for target in (path, *also):
        atomic_write(target, lambda f: f.write(buffer.getbuffer()))


def load_checkpoint(path: str | Path, *, for_resume: bool = False) -> dict[str, Any]:
    """A cnnkit checkpoint, its digest and structure checked; any problem is one
    CheckpointError that names the path."""
    path = Path(path)
    state = read_file(path)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a cnnkit checkpoint (no 'model' state)")
    if for_resume:
        missing = [k for k in RESUME_KEYS if k not in state]
        if missing:
            raise CheckpointError(f"{path}: cannot resume from it, it lacks {', '.join(missing)} "
                                  f"(it can still be evaluated or used as weights)")
    return state


def read_file(path: str | Path) -> Any:
    """Whatever a weights file holds: a cnnkit checkpoint is digest- and structure-checked
    (see the module's doc); anything else is returned as `torch.load(weights_only=True)` read
    it (shared with cnnkit.models.weights, which reads torchvision-format files)."""
    path = Path(path)
    try:
        with open_regular(path) as f:
            return _read_open(path, f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: not a regular file; a checkpoint is a file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise CheckpointError(f"{path}: cannot read it ({getattr(exc, 'strerror', '') or exc})"
                              ) from None


def _read_open(path: Path, f: io.BufferedReader) -> Any:
    size = os.fstat(f.fileno()).st_size
    f.seek(max(0, size - TRAILER))
    trailer = f.read(TRAILER)
    signed = size >= TRAILER and trailer.startswith(MAGIC)
    body = size - TRAILER if signed else size
    if signed and sha256_of(f, body) != trailer[len(MAGIC):]:
        raise CheckpointError(f"{path}: damaged: its bytes do not match the digest written "
                              f"with it (copy it again, or use another checkpoint)")
    state = _torch_load(path, Window(f, body))
    if not signed:
        if isinstance(state, dict) and "format" in state and "model" in state:
            raise CheckpointError(f"{path}: damaged: its digest trailer is missing or broken "
                                  f"(truncated or changed bytes)")
        if _is_cnnkit_checkpoint(state):
            print(f"cnnkit: warning: {path}: written before checkpoints carried a digest; its "
                  f"integrity cannot be checked (re-save it with cnnkit export)", file=sys.stderr)
            check_structure(state, path)
        return state  # a weights file from elsewhere: no digest to check
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a cnnkit checkpoint (no 'model' state)")
    check_structure(state, path)
    return state


def _check_records(path: Path, window: Window) -> None:
    """Each record of torch's zip stored as it is and within the file: what torch allocates
    for a tensor is then at most what the file holds."""
    try:
        records = zipfile.ZipFile(window).infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        return  # not a zip: torch's legacy format, or not a checkpoint (torch.load says)
    window.seek(0)
    total = sum(r.file_size for r in records)
    for r in sorted(records, key=lambda r: r.compress_type == zipfile.ZIP_STORED):
        if r.compress_type != zipfile.ZIP_STORED or r.file_size != r.compress_size \
                or r.header_offset + r.file_size > window.size or total > window.size:
            raise CheckpointError(f"{path}: refused: its record {r.filename} declares "
                                  f"{r.file_size:,} bytes ({total:,} in all) where the file "
                                  f"holds {window.size:,}; torch writes records as they are")


def _is_cnnkit_checkpoint(state: Any) -> bool:
    return isinstance(state, dict) and "model" in state and "config" in state


def _torch_load(path: Path, window: Window) -> Any:
    """`torch.load(weights_only=True)` on CPU; any failure is one CheckpointError."""
    _check_records(path, window)
    body = io.BufferedReader(window)
    try:
        return torch.load(body, map_location="cpu", weights_only=True)
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


# --- structure: every key cnnkit writes, what it must be ---------------------------------

def _int(low: int = 0) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _number(v) and math.isfinite(v)


def _state_dict(v: Any) -> bool:
    return isinstance(v, dict) and all(  # empty: a model without parameters (Flatten only)
        isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_finite(x) for x in v)


# columns a row may lack where others have them: added since, so a run resumed from an older
# checkpoint has them from its resumed epochs on
LATER_COLUMNS = {"data_wait"}


def _history(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(row, dict) and set(row) - LATER_COLUMNS == set(v[0]) - LATER_COLUMNS
        and _int(1)(row.get("epoch"))
        and all(isinstance(k, str) and _number(x) for k, x in row.items()) for row in v)


def _rng(v: Any) -> bool:
    if not isinstance(v, dict) or not {"python", "numpy", "torch"} <= set(v):
        return False
    python, numpy_, cpu = v["python"], v["numpy"], v["torch"]
    return (isinstance(python, (tuple, list)) and len(python) == 3
            and isinstance(python[1], (tuple, list)) and len(python[1]) == 625
            and all(_int()(x) for x in python[1])
            and isinstance(numpy_, (tuple, list)) and len(numpy_) == 5
            and isinstance(numpy_[1], torch.Tensor) and numpy_[1].shape == (624,)
            and _int()(numpy_[2]) and _int()(numpy_[3]) and _number(numpy_[4])
            and _uint8(cpu) and all(_uint8(t) for t in v.get("cuda", [])))


def _uint8(v: Any) -> bool:
    return isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1


def _optimizer(v: Any) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("state"), dict)
            and isinstance(v.get("param_groups"), list) and bool(v["param_groups"])
            and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                    for g in v["param_groups"]))


def _ema(v: Any) -> bool:
    return (isinstance(v, dict) and _finite(v.get("decay")) and _int()(v.get("updates"))
            and _state_dict(v.get("model")))


def _preprocessing(v: Any) -> bool:
    return (isinstance(v, dict) and _int(1)(v.get("channels")) and _int(1)(v.get("height"))
            and _int(1)(v.get("width"))
            and v["channels"] * v["height"] * v["width"] <= MAX_INPUT_VALUES
            and (v.get("resize") is None or _int(1)(v["resize"])
                 and v["channels"] * v["resize"] ** 2 <= MAX_INPUT_VALUES)
            and _numbers(v.get("mean")) and _numbers(v.get("std"))
            and len(v["mean"]) == len(v["std"]) == v["channels"] and min(v["std"]) > 0
            and (v.get("crop") is None or _int(1)(v["crop"]))
            and v.get("interpolation") in ("nearest", "bilinear", "bicubic"))


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


STRUCTURE: dict[str, tuple[Callable[[Any], bool], str]] = {
    "model": (_state_dict, "a state_dict (parameter names to tensors)"),
    "config": (lambda v: isinstance(v, dict), "a config mapping"),
    "classes": (lambda v: isinstance(v, list) and all(_text(c) for c in v), "a list of names"),
    "data_sizes": (lambda v: isinstance(v, dict) and all(_text(k) and _int()(n)
                                                         for k, n in v.items()),
                   "split names to example counts"),
    "mean": (_numbers, "a list of numbers"),
    "std": (_numbers, "a list of numbers"),
    "preprocessing": (_preprocessing, f"a preprocessing record (channels, height, width, mean, "
                                      f"std, resize, interpolation; at most "
                                      f"{MAX_INPUT_VALUES:,} values an image)"),
    "task": (_text, "a task name"),
    "epoch": (_int(), "an integer >= 0"),
    "step": (_int(), "an integer >= 0"),
    "totals": (_optional(lambda v: isinstance(v, torch.Tensor) and v.dim() == 1
                         and v.is_floating_point()), "a 1-D float tensor or null"),
    "history": (_history, "a list of metric rows with the same keys, each with its epoch"),
    "best": (_optional(_finite), "a finite number or null"),
    "best_epoch": (_optional(_int(1)), "an epoch number or null"),
    "rng": (_rng, "the RNG states (python, numpy, torch)"),
    "optimizer": (_optimizer, "an optimizer state_dict"),
    "scheduler": (lambda v: isinstance(v, dict) and all(_text(k) for k in v),
                  "a scheduler state_dict"),
    "scaler": (lambda v: isinstance(v, dict), "a GradScaler state_dict"),
    "ema": (_ema, "a weight average (decay, updates, model)"),
    "cnnkit_version": (_text, "a version string"),
    "torch_version": (_text, "a version string"),
    "format": (_int(1), "a format number"),
}


def check_structure(state: dict[str, Any], path: str | Path) -> None:
    """Every known key holds what cnnkit writes there, and the keys agree with each other."""
    for key, (check, expected) in STRUCTURE.items():
        if key in state and not check(state[key]):
            raise CheckpointError(f"{path}: malformed checkpoint: '{key}' should be {expected}, "
                                  f"found {_describe(state[key])}")
    check_tensors(state["model"], f"{path}: malformed checkpoint: 'model'")
    if "ema" in state:
        check_tensors(state["ema"]["model"], f"{path}: malformed checkpoint: 'ema'")
    if state.get("best_epoch") is not None and state.get("epoch") is not None \
            and state["best_epoch"] > state["epoch"]:
        raise CheckpointError(f"{path}: malformed checkpoint: 'best_epoch' "
                              f"{state['best_epoch']} is past 'epoch' {state['epoch']}")
    if state.get("format", FORMAT) > FORMAT:
        raise CheckpointError(f"{path}: written by a newer cnnkit (checkpoint format "
                              f"{state['format']}; this one reads up to {FORMAT})")
    if "step" in state and "totals" in state and (state["step"] == 0) != (
            state["totals"] is None):
        raise CheckpointError(f"{path}: malformed checkpoint: 'step' {state['step']} and "
                              f"'totals' disagree (sums are kept exactly when an epoch is "
                              f"part done)")
    if "history" in state and "epoch" in state and (
            len(state["history"]) != state["epoch"]
            or [r["epoch"] for r in state["history"]] != list(range(1, state["epoch"] + 1))):
        raise CheckpointError(f"{path}: malformed checkpoint: 'epoch' is {state['epoch']} but "
                              f"'history' holds epochs {[r['epoch'] for r in state['history']]}")


def check_tensors(weights: dict[str, torch.Tensor], where: str) -> None:
    """Weights as training writes them: dense tensors in memory (not sparse, not on the
    meta device), numbers (not complex), floats all finite (the divergence watch never
    saves a NaN). CheckpointError `where: KEY is ...` naming the first that is not."""
    for key, tensor in weights.items():
        problem = None
        if tensor.layout != torch.strided or tensor.is_quantized:
            problem = f"a {str(tensor.layout).removeprefix('torch.')} tensor"
        elif tensor.device.type != "cpu":
            problem = f"on the {tensor.device.type} device, with no values"
        elif tensor.is_complex():
            problem = f"{tensor.dtype}"
        elif tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            problem = "not finite (NaN or inf)"
        if problem:
            raise CheckpointError(f"{where}: {key} is {problem}; expected dense, finite "
                                  f"weights")


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def restore_part(path: str | Path, what: str, load: Callable[[], Any]) -> Any:
    """`load()` (a load_state_dict, say), with whatever it raises on a checkpoint's content
    turned into one CheckpointError naming the file and the part."""
    try:
        return load()
    except CheckpointError:
        raise
    except Exception as exc:  # torch raises RuntimeError, ValueError, KeyError, TypeError...
        raise CheckpointError(f"{path}: its {what} does not fit this run "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None


def as_dtypes_of(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                 path: str | Path) -> dict[str, torch.Tensor]:
    """`weights` in the dtypes of the model's own `reference` state_dict; an integer tensor
    where the model has a float one (or the reverse) is a CheckpointError. (load_state_dict
    with assign=True would keep a file's dtypes and fail in the first forward pass.)"""
    out = {}
    for key, tensor in weights.items():
        dtype = reference[key].dtype if key in reference else tensor.dtype
        if tensor.dtype != dtype and tensor.is_floating_point() != dtype.is_floating_point:
            raise CheckpointError(f"{path}: weights do not fit the model ({key} is "
                                  f"{tensor.dtype}, the model's is {dtype})")
        out[key] = tensor.to(dtype)
    return out


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


def inference_weights(checkpoint: dict[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The weights to evaluate or predict with: the average where the run kept one (its
    val_* metrics and best.pt were chosen on it), else the trained weights. Also their name."""
    if isinstance(checkpoint.get("ema"), dict) and "model" in checkpoint["ema"]:
        return checkpoint["ema"]["model"], "ema"
    return checkpoint["model"], "raw"
