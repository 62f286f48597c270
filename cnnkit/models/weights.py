"""Pretrained weights (`model.weights`): read, matched key by key, loaded, and reported.

Sources: a torchvision-format state_dict (`.pth`/`.pt`), a cnnkit checkpoint (a dict with
"model"), a `.safetensors` file, or `torchvision:<WeightsEnum>` (e.g.
`torchvision:ResNet18_Weights.IMAGENET1K_V1`), read from torch's hub cache and downloaded
there only when missing. Files are read with `weights_only=True`; the `module.` (DDP) and
`_orig_mod.` (torch.compile) prefixes are stripped.

Nothing is half-loaded silently: every key of the model is loaded, re-initialized (the head,
when the classes differ from the weights'), or an error, unless `model.partial_load` is set,
and then every skipped key is listed in the load report.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cnnkit.checkpoint import as_dtypes_of, check_tensors, read_file
from cnnkit.errors import CheckpointError, ConfigError
from cnnkit.models.blocks import AuxHead
from cnnkit.models.builder import is_layer
from cnnkit.models.freeze import check_prefixes, under
from cnnkit.models.layers import REGISTRY
from cnnkit.schema import Config

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

TORCHVISION = "torchvision:"
SHOWN = 5  # keys named per kind in an error message; the report file lists all


@dataclass
class Preprocess:
    """What torchvision's weights were trained with (its `ImageClassification` transform)."""

    resize: int  # shorter side, pixels, before the crop
    crop: int  # square crop, pixels: the input size
    mean: tuple[float, ...]  # per channel, [0, 1] scale
    std: tuple[float, ...]
    interpolation: str  # e.g. "bilinear"


@dataclass
class Pretrained:
    state_dict: dict[str, torch.Tensor]
    origin: str  # the file, or torchvision:<WeightsEnum>
    classes: list[str] | None = None  # the labels the head was trained on (cnnkit checkpoints)
    categories: list[str] | None = None  # display names of the head's outputs (torchvision)
    preprocess: Preprocess | None = None


@dataclass
class LoadReport:
    origin: str
    loaded: list[str] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    mismatched: list[str] = field(default_factory=list)  # "key (file AxB, model CxD)"
    ignored: list[str] = field(default_factory=list)  # auxiliary heads that are switched off
    head_reason: str = ""
    partial: bool = False
    preprocess: Preprocess | None = None
    categories: list[str] | None = None

    @property
    def skipped(self) -> list[str]:
        return [*self.missing, *self.unexpected, *self.mismatched]

    def format(self, *, full: bool = False) -> str:
        """The report as text: printed with loaded keys grouped by top-level module, saved
        (`full=True`) with every key."""
        lines = [f"weights: {self.origin}"]
        loaded = self.loaded if full else _by_top(self.loaded)
        lines.append(_kind("loaded", len(self.loaded), loaded))
        head = f" ({self.head_reason})" if self.head_reason else ""
        lines.append(_kind(f"re-initialized{head}", len(self.reinitialized), self.reinitialized))
        skip = " (skipped: model.partial_load)" if self.partial else ""
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("shape mismatch", self.mismatched)):
            lines.append(_kind(name + (skip if keys else ""), len(keys), keys))
        if self.ignored:
            lines.append(_kind("ignored (auxiliary heads off)", len(self.ignored), self.ignored))
        if self.preprocess is not None:
            p = self.preprocess
            lines.append(f"  preprocessing: resize {p.resize}, crop {p.crop}, mean "
                         f"{list(p.mean)}, std {list(p.std)}, {p.interpolation}")
        if self.categories:
            lines.append(f"  categories: {len(self.categories)} ({', '.join(self.categories[:3])}"
                         f"{', ...' if len(self.categories) > 3 else ''})")
        return "\n".join(lines)


def _kind(name: str, count: int, keys: list[str]) -> str:
    listed = f": {', '.join(keys)}" if keys else ""
    return f"  {name}: {count}{listed}"


def _by_top(keys: list[str]) -> list[str]:
    """['layer1 (30)', 'fc (2)']: counts per top-level module, in order."""
    counts: dict[str, int] = {}
    for key in keys:
        top = key.split(".")[0]
        counts[top] = counts.get(top, 0) + 1
    return [f"{top} ({n})" for top, n in counts.items()]


def read_weights(spec: str, *, source: str = "<config>") -> Pretrained:
    """The state_dict (prefixes stripped) and what is known of it, from a file or torchvision."""
    if spec.startswith(TORCHVISION):
        weights = torchvision_weights(spec, source=source)
        state = _as_state_dict(read_file(_torchvision_file(weights, spec, source)), spec)
        return Pretrained(state, spec, categories=list(weights.meta.get("categories") or []),
                          preprocess=_preprocess(weights))
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"{source}: model.weights: {path}: file not found (a .pth, .pt "
                              f"or .safetensors file, a cnnkit checkpoint, or "
                              f"torchvision:<WeightsEnum>)")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
        check_tensors(state, f"{path}: malformed weights")
        return Pretrained(strip_prefixes(state), str(path))
    raw = read_file(path)
    classes = raw.get("classes") if isinstance(raw, dict) and "model" in raw else None
    if classes is not None and not (isinstance(classes, list)
                                    and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{path}: malformed weights file: 'classes' should be a list of "
                              f"names, found {type(classes).__name__}")
    return Pretrained(_as_state_dict(raw, str(path)), str(path), classes=classes)


def _as_state_dict(raw: Any, origin: str) -> dict[str, torch.Tensor]:
    """A bare state_dict, a cnnkit checkpoint's "model", or a Lightning-style "state_dict"."""
    if isinstance(raw, dict):
        for key in ("model", "state_dict"):
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or \
            not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{origin}: not a state_dict (expected a mapping of parameter "
                              f"names to tensors, or a checkpoint holding one under 'model')")
    check_tensors(raw, f"{origin}: malformed weights")  # as a checkpoint's are checked
    return strip_prefixes(raw)


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys as the bare model names them: without DDP's leading `module.` and without
    torch.compile's `_orig_mod.` (at the front, or in front of a compiled submodule)."""
    out = {}
    for key, value in state.items():
        key = key.replace("._orig_mod.", ".")
        while key.startswith(("module.", "_orig_mod.")):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package "
                              f"(pip install safetensors)") from None
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file "
                              f"({str(exc).splitlines()[0][:120]})") from None


def torchvision_weights(spec: str, *, source: str = "<config>") -> WeightsEnum:
    """The torchvision WeightsEnum member `torchvision:Enum.MEMBER` names (no download)."""
    from torchvision import models

    name = spec[len(TORCHVISION):]
    enum_name, _, member = name.partition(".")
    enums = {models.get_model_weights(m).__name__: models.get_model_weights(m)
             for m in models.list_models()}
    where = f"{source}: model.weights: {spec}"
    if enum_name not in enums:
        close = difflib.get_close_matches(enum_name, list(enums), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"{where}: torchvision has no weights '{enum_name}'{hint} "
                          f"(expected torchvision:<Enum>.<MEMBER>, e.g. "
                          f"torchvision:ResNet18_Weights.IMAGENET1K_V1)")
    members = list(enums[enum_name].__members__)
    if member not in members:
        raise ConfigError(f"{where}: {enum_name} has no member '{member}' "
                          f"(valid: {', '.join(members)})")
    return enums[enum_name][member]


def _torchvision_file(weights: WeightsEnum, spec: str, source: str) -> Path:
    """The file in torch's hub cache, downloaded into it when missing and the network allows."""
    url = weights.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    found = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), found.group(1) if found else None,
                                       progress=True)
    except Exception as exc:  # URLError, socket and SSL errors, a hash mismatch: all "no file"
        reason = re.sub(r"\s+", " ", str(exc))[:100] or type(exc).__name__
        raise CheckpointError(
            f"{source}: model.weights {spec}: not in torch's cache and the download failed "
            f"({reason}); offline, fetch {url} on a connected machine and set "
            f"model.weights: /path/to/{path.name} (or put the file at {path})") from None
    return path


def _preprocess(weights: WeightsEnum) -> Preprocess | None:
    transform = weights.transforms()
    if not hasattr(transform, "crop_size"):
        return None
    return Preprocess(resize=int(transform.resize_size[0]), crop=int(transform.crop_size[0]),
                      mean=tuple(transform.mean), std=tuple(transform.std),
                      interpolation=transform.interpolation.value)


def with_pretrained_defaults(cfg: Config) -> Config:
    """`cfg` with torchvision weights' normalization where the config leaves it open
    (`data.mean`/`data.std` null). Cheap: reads torchvision's metadata, downloads nothing."""
    spec = cfg.model.weights
    if not spec or not spec.startswith(TORCHVISION):
        return cfg
    preprocess = _preprocess(torchvision_weights(spec, source=cfg.source))
    if preprocess is None or cfg.model.input[0] != len(preprocess.mean):
        return cfg  # e.g. grey input: the RGB statistics do not apply
    data = dataclasses.replace(
        cfg.data,
        mean=list(preprocess.mean) if cfg.data.mean is None else cfg.data.mean,
        std=list(preprocess.std) if cfg.data.std is None else cfg.data.std)
    return dataclasses.replace(cfg, data=data)


def head_paths(model: nn.Module) -> list[str]:
    """The classifier layers: the last module with its own parameters on the main path, and
    the last one inside each auxiliary head."""
    aux = [name for name, m in model.named_children() if isinstance(m, AuxHead)]
    main, heads = None, {a: None for a in aux}
    for name, module in model.named_modules():
        if not any(True for _ in module.parameters(recurse=False)):
            continue
        owner = next((a for a in aux if name.startswith(a + ".")), None)
        if owner is None:
            main = name
        else:
            heads[owner] = name
    return [p for p in [main, *heads.values()] if p is not None]


def match(model: nn.Module, pretrained: Pretrained, *, head: list[str],
          classes: list[str] | None = None, ignore: tuple[str, ...] = (),
          partial: bool = False) -> LoadReport:
    """Decide, key by key, what is loaded, re-initialized, missing, unexpected or mismatched."""
    report = LoadReport(pretrained.origin, partial=partial, preprocess=pretrained.preprocess,
                        categories=pretrained.categories)
    ours, theirs = model.state_dict(), pretrained.state_dict
    renamed = pretrained.classes is not None and classes is not None \
        and list(pretrained.classes) != list(classes)
    for key, tensor in ours.items():
        in_head = any(under(key, h) for h in head)
        if key not in theirs:
            report.missing.append(key)
        elif in_head and (theirs[key].shape != tensor.shape or renamed):
            report.reinitialized.append(key)
        elif theirs[key].shape != tensor.shape:
            report.mismatched.append(f"{key} (file {_shape(theirs[key])}, "
                                     f"model {_shape(tensor)})")
        else:
            report.loaded.append(key)
    for key in theirs:
        if key not in ours:
            dropped = any(key.startswith(a + ".") for a in ignore)
            (report.ignored if dropped else report.unexpected).append(key)
    report.head_reason = _head_reason(report, pretrained, classes, renamed)
    return report


def _head_reason(report: LoadReport, pretrained: Pretrained, classes: list[str] | None,
                 renamed: bool) -> str:
    if not report.reinitialized:
        return ""
    if renamed:
        return (f"head: the weights' classes {_names(pretrained.classes)}, "
                f"the data's {_names(classes)}")
    return "head: class count differs from the weights'"


def _names(classes: list[str]) -> str:
    return ",".join(classes) if len(classes) <= 10 else f"{len(classes)} classes"


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(str(s) for s in tensor.shape) or "scalar"


def load_matched(model: nn.Module, pretrained: Pretrained, report: LoadReport, *,
                 source: str = "<config>") -> None:
    """Copy the loaded tensors into the model; refuse any other mismatch unless partial."""
    if report.skipped and not report.partial:
        raise CheckpointError(f"{source}: model.weights {report.origin}: does not fit the model: "
                              f"{_problems(report)} (model.partial_load: true skips them)")
    state = {key: pretrained.state_dict[key] for key in report.loaded}
    # an integer, bool or complex tensor where the model has floats is refused, as eval does
    state = as_dtypes_of(state, model.state_dict(), f"{source}: model.weights {report.origin}")
    model.load_state_dict(state, strict=False)


def _problems(report: LoadReport) -> str:
    parts = []
    for name, keys in (("differ in shape", report.mismatched), ("missing from the file",
                       report.missing), ("unexpected in the file", report.unexpected)):
        if keys:
            more = f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
            parts.append(f"{len(keys)} {name}: {', '.join(keys[:SHOWN])}{more}")
    return "; ".join(parts)


def dropped_aux_heads(cfg: Config) -> tuple[str, ...]:
    """Top-level auxiliary heads the config declares but switches off (model.aux_heads)."""
    layers = cfg.model.layers
    if cfg.model.aux_heads or not isinstance(layers, dict):
        return ()
    names = []
    for name, spec in layers.items():
        if is_layer(spec):
            cls = REGISTRY.get(spec if isinstance(spec, str) else spec[0])
            if isinstance(cls, type) and issubclass(cls, AuxHead):
                names.append(str(name))
    return tuple(names)


def load_pretrained(model: nn.Module, cfg: Config, *, classes: list[str] | None = None
                    ) -> LoadReport:
    """Load `cfg.model.weights` into `model` (a fresh head where the classes differ)."""
    pretrained = read_weights(cfg.model.weights, source=cfg.source)
    head = check_prefixes(model, cfg.model.head, key="model.head", source=cfg.source) \
        if cfg.model.head is not None else head_paths(model)
    report = match(model, pretrained, head=head, classes=classes,
                   ignore=dropped_aux_heads(cfg), partial=cfg.model.partial_load)
    load_matched(model, pretrained, report, source=cfg.source)
    return report
