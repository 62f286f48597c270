"""The one door from a checkpoint to a ready predictor: `load_predictor(path)` reads the file
through `cnnkit.checkpoint` (digest, structure), parses its config once (with any --set),
builds the model on the meta device, assigns the weights (the EMA's where the run kept one)
and returns it in eval mode with its preprocessing, class names and task. eval, predict,
visualize and `cnnkit.load` all come through here; nothing else picks fields out of a
checkpoint dict.

A checkpoint is untrusted input: nothing embedded in it makes cnnkit download or create
folders (`data.download` is off unless the command line sets it; `data.root` is only read).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cnnkit.checkpoint import as_dtypes_of, inference_weights, load_checkpoint
from cnnkit.config import apply_override, config_from_dict
from cnnkit.data.preprocess import preprocessing_record
from cnnkit.errors import CheckpointError, CnnkitError
from cnnkit.infer.predict import Predictor
from cnnkit.models.builder import Network, build_network
from cnnkit.rundir import BEST, LAST
from cnnkit.runtime.assemble import resolve_device
from cnnkit.schema import Config
from cnnkit.tasks import Task, recorded_task


def checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's best.pt (else its last.pt)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in (BEST, LAST):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: a directory without best.pt or last.pt (not a run "
                          f"directory, or no epoch was trained)")


def load_predictor(path: str | Path, *, device: str | torch.device = "cpu",
                   overrides: Sequence[str] = ()) -> Predictor:
    """The predictor of a checkpoint file or run directory, on `device`. `overrides` (--set
    KEY=VALUE) change the config it was trained with, e.g. to evaluate on other data."""
    path = checkpoint_path(path)
    state = load_checkpoint(path)
    cfg, record = _config(state, path, overrides)
    if [record["channels"], record["height"], record["width"]] != list(cfg.model.input):
        raise CheckpointError(f"{path}: malformed checkpoint: its preprocessing gives "
                              f"{record['channels']}×{record['height']}×{record['width']} "
                              f"but its model takes {'×'.join(map(str, cfg.model.input))}")
    try:
        task = recorded_task(cfg, state.get("task"))
    except CnnkitError as exc:
        raise CheckpointError(f"{path}: malformed checkpoint: {exc}") from None
    model = model_of_checkpoint(state, path, cfg)
    classes = _classes(state, model, task, path)
    return Predictor(model, cfg, classes, task, record, inference_weights(state)[1], path,
                     torch.device("cpu")).to(device)


def _config(state: dict, path: Path, overrides: Sequence[str]) -> tuple[Config, dict[str, Any]]:
    """The checkpoint's config, parsed and checked once with the command line's overrides
    applied, and its preprocessing record. The recorded mean and std are written in first (the
    record is the truth; a checkpoint from before it has them beside the weights, or in its
    config); data.download is off."""
    raw = copy.deepcopy(state.get("config"))
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds no config; it can only be used as weights")
    data = raw.setdefault("data", {})
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: malformed checkpoint: its config's data is not a "
                              f"mapping")
    data["download"] = False  # an embedded download never runs; --set may turn it on
    record = state.get("preprocessing")
    own = None
    if record is None:  # format 1: mean and std beside the weights, or in the config
        for key in ("mean", "std"):
            if data.get(key) is None and key in state:
                data[key] = list(state[key])
        own = _parse(raw, path)  # the record of the config as trained, before any --set
        record = preprocessing_record(own)
    data["mean"], data["std"] = list(record["mean"]), list(record["std"])
    if own is not None and not overrides:
        return own, record
    if not overrides:
        return _parse(raw, path), record
    for item in overrides:
        apply_override(raw, item, source=str(path))
    return config_from_dict(raw, source=str(path)), record  # an error names the --set key


def _parse(raw: dict, path: Path) -> Config:
    try:
        return config_from_dict(copy.deepcopy(raw), source=str(path))
    except CnnkitError as exc:
        raise CheckpointError(f"malformed checkpoint config: {exc}") from None


def model_of_checkpoint(state: dict, path: str | Path, cfg: Config) -> Network:
    """The model `cfg` describes holding the checkpoint's weights (the EMA's where it has one),
    on the CPU in eval mode. Built on the meta device, then given the checkpoint's tensors: no
    time or memory goes to an init they would overwrite (seconds for VGG's 143 M parameters)."""
    with torch.device("meta"):
        model = build_network(cfg)
    weights = as_dtypes_of(inference_weights(state)[0], model.state_dict(), path)
    try:
        model.load_state_dict(weights, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise CheckpointError(f"{path}: the model has tensors its checkpoint does not hold")
    return model.eval()


def _classes(state: dict, model: Network, task: Task, path: Path) -> list[str]:
    """The class names, one per class score of the model (indices where none were saved)."""
    outputs = model.output_shape[0] - task.extra_outputs  # localization: p_c, x, y, w, h
    classes = state.get("classes") or [str(k) for k in range(outputs)]
    if len(classes) != outputs:
        raise CheckpointError(f"{path}: malformed checkpoint: {len(classes)} class names for "
                              f"a model with {outputs} class scores")
    return list(classes)


def load(path: str | Path, *, device: str | torch.device = "cpu") -> Predictor:
    """`cnnkit.load("runs/x")`: the predictor of a run directory (best.pt, else last.pt) or a
    checkpoint file, on `device` (auto: cuda, then mps, then cpu); `.predict(images)` takes
    paths, folders, PIL images or tensors."""
    if isinstance(device, str):
        device = resolve_device(device, key="device")
    return load_predictor(path, device=device)
