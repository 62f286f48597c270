"""The one door from a checkpoint to a ready predictor: `load_predictor(path)` reads the file
through `cnnkit.checkpoint` (digest, structure), builds the model on the meta device, assigns
the weights (the EMA's where the run kept one) and returns it in eval mode with its
preprocessing, class names and task. eval, predict, visualize and `cnnkit.load` all come
through here; nothing else picks fields out of a checkpoint dict.

A checkpoint is untrusted input: nothing embedded in it makes cnnkit download or create
folders (`data.download` is off unless the command line sets it; `data.root` is only read).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from cnnkit.checkpoint import as_dtypes_of, load_checkpoint
from cnnkit.config import apply_override, config_from_dict
from cnnkit.data.preprocess import preprocessing_record
from cnnkit.errors import CheckpointError, CnnkitError
from cnnkit.models.builder import Network, build_model
from cnnkit.rundir import BEST, LAST
from cnnkit.schema import Config
from cnnkit.training.ema import inference_weights

Image = Any  # a path, a PIL image, or a (C, H, W) tensor (uint8, or float in [0, 1])


@dataclass
class Predictor:
    """A checkpoint's model, ready: `predict(images)` gives classes with probabilities (and
    boxes for localization); `inputs(images)` the tensor the model sees."""

    model: Network  # eval mode, on `device`
    cfg: Config  # the run's config, with the recorded preprocessing and any overrides
    classes: list[str]
    task: str  # "classification" or "localization"
    preprocessing: dict[str, Any]  # the checkpoint's record (cnnkit.data.preprocess)
    weights: str  # "ema" (the run's weight average) or "raw"
    path: Path
    device: torch.device

    def to(self, device: str | torch.device) -> Predictor:
        device = torch.device(device)
        return replace(self, model=self.model.to(device), device=device)

    def inputs(self, images: Sequence[Image], *, invert: bool = False, first: int = 0
               ) -> torch.Tensor:
        """(B, C, H, W) float on the device: decoded, resized and normalized as recorded;
        `invert` and the warning of an inverted image: infer/invert.py (`first`: the index of
        images[0] among all, for the names of unnamed images)."""
        from cnnkit.infer.images import prepare

        return prepare(images, self.preprocessing, invert=invert, first=first).to(self.device)

    def predict(self, images: Image | Sequence[Image], *, top: int = 5) -> list[dict[str, Any]]:
        """One dict per image (a folder: every image under it): "class", "probability" and
        "top" [{"class", "probability"}, ...]; for localization also "object", "p_object",
        "box" (x, y, w, h as fractions) and "box_pixels"."""
        from cnnkit.infer.predict import predict

        return predict(self, images, top=top)


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
    raw, record = _recorded_config(state, path)
    own = _parse(raw, path)  # as the checkpoint holds it: an error names the file
    cfg = _with_overrides(raw, path, overrides)  # an error names the --set
    model = model_of_checkpoint(state, path, cfg)
    if [record["channels"], record["height"], record["width"]] != list(own.model.input):
        raise CheckpointError(f"{path}: malformed checkpoint: its preprocessing gives "
                              f"{record['channels']}×{record['height']}×{record['width']} "
                              f"but its model takes {'×'.join(map(str, own.model.input))}")
    task = state.get("task", own.task.name)
    if task != own.task.name:
        raise CheckpointError(f"{path}: malformed checkpoint: task '{task}' but its config "
                              f"says '{own.task.name}'")
    classes = _classes(state, model, task, path)
    return Predictor(model, cfg, classes, task, record, inference_weights(state)[1], path,
                     torch.device("cpu")).to(device)


def _recorded_config(state: dict, path: Path) -> tuple[dict, dict[str, Any]]:
    """The checkpoint's raw config with the recorded mean and std written in (the record is
    the truth; a checkpoint from before it has mean and std beside the weights, or in its
    config), data.download off; and the preprocessing record."""
    raw = copy.deepcopy(state.get("config"))
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: holds no config; it can only be used as weights")
    data = raw.setdefault("data", {})
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: malformed checkpoint: its config's data is not a "
                              f"mapping")
    data["download"] = False  # an embedded download never runs; --set may turn it on
    record = state.get("preprocessing")
    if record is None:  # format 1: mean and std beside the weights, or in the config
        for key in ("mean", "std"):
            if data.get(key) is None and key in state:
                data[key] = list(state[key])
        record = preprocessing_record(_parse(raw, path))
    data["mean"], data["std"] = list(record["mean"]), list(record["std"])
    return raw, record


def _parse(raw: dict, path: Path) -> Config:
    try:
        return config_from_dict(copy.deepcopy(raw), source=str(path))
    except CnnkitError as exc:
        raise CheckpointError(f"malformed checkpoint config: {exc}") from None


def _with_overrides(raw: dict, path: Path, overrides: Sequence[str]) -> Config:
    """The config with the command line's overrides applied."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item, source=str(path))
    return config_from_dict(raw, source=str(path))


def model_of_checkpoint(state: dict, path: str | Path, cfg: Config) -> Network:
    """The model `cfg` describes holding the checkpoint's weights (the EMA's where it has one),
    on the CPU in eval mode. Built on the meta device, then given the checkpoint's tensors: no
    time or memory goes to an init they would overwrite (seconds for VGG's 143 M parameters)."""
    with torch.device("meta"):
        model = build_model(cfg)
    weights = as_dtypes_of(inference_weights(state)[0], model.state_dict(), path)
    try:
        model.load_state_dict(weights, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        raise CheckpointError(f"{path}: the model has tensors its checkpoint does not hold")
    return model.eval()


def _classes(state: dict, model: Network, task: str, path: Path) -> list[str]:
    """The class names, one per class score of the model (indices where none were saved)."""
    outputs = model.output_shape[0] - (5 if task == "localization" else 0)  # p_c, x, y, w, h
    classes = state.get("classes") or [str(k) for k in range(outputs)]
    if len(classes) != outputs:
        raise CheckpointError(f"{path}: malformed checkpoint: {len(classes)} class names for "
                              f"a model with {outputs} class scores")
    return list(classes)


def load_model(path: str | Path, *, device: torch.device) -> tuple[Network, Config, list[str]]:
    """The checkpoint's model in eval mode on `device`, its config and its class names."""
    predictor = load_predictor(path, device=device)
    return predictor.model, predictor.cfg, predictor.classes


def load(path: str | Path, *, device: str | torch.device = "cpu") -> Predictor:
    """`cnnkit.load("runs/x")`: the predictor of a run directory (best.pt, else last.pt) or a
    checkpoint file, on `device` (auto: cuda, then mps, then cpu); `.predict(images)` takes
    paths, folders, PIL images or tensors."""
    if isinstance(device, str):
        from cnnkit.training.trainer import resolve_device

        device = resolve_device(device, key="device")
    return load_predictor(path, device=device)
