"""Configs: one YAML file plus `--set` overrides in, one checked, resolved `Config` out.

The schema is the dataclasses below; their type hints drive the checks. Every problem is a
`ConfigError` whose one-line message names the file, the full key path, what was expected and
what was found, with a close match where there is one.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from cnnkit.errors import ConfigError


@dataclass
class ModelConfig:
    input: list[int]  # C, H, W of one example, declared once; shapes are propagated from it
    layers: Any  # the layer language (docs/DESIGN.md); checked by the builder
    weights: str | None = None  # a .pth/.pt/.safetensors file, a cnnkit checkpoint, or
    # torchvision:<WeightsEnum>, e.g. torchvision:ResNet18_Weights.IMAGENET1K_V1 (models/weights.py)
    head: list[str | int] | None = None  # module paths made fresh when the classes differ
    # from the weights'; None: the last layer with weights (and each auxiliary head's)
    partial_load: bool = False  # skip (and list) keys that do not fit instead of refusing
    aux_heads: bool = True  # keep auxiliary heads (GoogLeNet's aux1, aux2) where layers have them
    aux_weight: float = 0.3  # each auxiliary loss's weight in training, as in the GoogLeNet paper
    # model-wide weight init after building, as torchvision's model classes do (cnnkit/init.py);
    # default: each layer keeps its own (PyTorch's for plain layers, torchvision's for blocks)
    init: Literal["default", "resnet", "vgg", "googlenet"] = "default"


@dataclass
class LocalizationDataConfig:
    """mnist-localization canvases and localization-csv images (cnnkit/data/localization.py)."""

    size: int = 64  # canvases and csv images are size × size pixels
    digit_size: list[int] = field(default_factory=lambda: [20, 44])  # px, side of the pasted
    # 28×28 MNIST frame, drawn uniformly from [min, max]
    empty: float = 0.2  # share of canvases with no digit (the seed's "nothing")
    noise: float = 0.0  # std of Gaussian background noise, on the [0, 1] pixel scale
    seed: int = 0  # canvases are a function of this seed (not train.seed): the dataset is fixed
    channels: int = 3  # localization-csv: 1 (grayscale) or 3 (RGB)


@dataclass
class AugmentConfig:
    """Batched augmentation of training batches on the device (cnnkit/augment.py); all off."""

    translate: float = 0.0  # largest shift, a fraction of height and width (0.1: ±2.8 px at 28)
    rotate: float = 0.0  # largest rotation either way, degrees
    scale: float = 0.0  # largest zoom change: the factor is drawn from [1 - scale, 1 + scale]
    crop_padding: int = 0  # pixels of zero padding on each side before a random crop to size
    hflip: bool = False  # mirror half the images left-right (wrong for digits)
    cutout: int = 0  # side of one square erased to the dataset mean, pixels; 0: off


@dataclass
class DataConfig:
    name: str = "mnist-sample"
    root: str | None = None  # folder of on-disk datasets (mnist, imagefolder)
    train_size: int | None = None  # carved from the training files, stratified by class;
    val_size: int | None = None  # None: the dataset's default (mnist-sample: 4,000 and 1,000)
    mean: list[float] | None = None  # per channel, on the [0, 1] scale; None: dataset default
    std: list[float] | None = None
    download: bool = False  # fetch through torchvision when the files are missing
    image_size: int = 224  # imagefolder: side of the square crop fed to the model, in pixels
    workers: int = 4  # imagefolder: DataLoader worker processes decoding images (0: in-process)
    skip_bad: bool = False  # imagefolder: skip files that cannot be decoded (one warning)
    classes: list[int | str] | None = None  # keep only these classes (by name, e.g. digits
    # [5, 6, 7]), relabelled 0..K-1 in this order; None: all
    train_per_class: int | None = None  # keep this many training examples of each class
    # (a fixed random subset); None: all
    localization: LocalizationDataConfig = field(default_factory=LocalizationDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training split only


@dataclass
class LrGroup:
    modules: list[str | int]  # module-path prefixes, e.g. [features] or [conv1, bn1, layer1]
    lr: float  # their learning rate; parameters in no group use train.lr


@dataclass
class ScheduleConfig:
    """The learning rate per optimizer step, as a factor of train.lr (cnnkit/optim.py)."""

    name: Literal["constant", "step", "multistep", "cosine", "onecycle"] = "constant"
    warmup_epochs: float = 0.0  # linear ramp to train.lr over this many epochs; 0: none
    step_size: float = 1.0  # step: epochs between two multiplications by gamma
    milestones: list[float] = field(default_factory=list)  # multistep: epochs where lr *= gamma
    gamma: float = 0.1  # step, multistep: the factor applied at each decay
    min_lr: float = 0.0  # cosine: the learning rate the curve ends at
    pct_start: float = 0.3  # onecycle: fraction of all steps spent rising to train.lr
    div_factor: float = 25.0  # onecycle: starts at train.lr / div_factor
    final_div_factor: float = 1.0e4  # onecycle: ends at train.lr / div_factor / final_div_factor


@dataclass
class EarlyStoppingConfig:
    patience: int = 0  # epochs without improvement of train.monitor before stopping; 0: off
    min_delta: float = 0.0  # smallest change of train.monitor that counts as an improvement


@dataclass
class TrainConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 0.005
    batch_size: int = 1000
    epochs: int = 10
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    seed: int = 0
    device: str = "auto"  # auto: cuda, then mps, then cpu
    monitor: Literal["val_acc", "val_loss"] = "val_acc"  # decides best.pt
    log_every: int = 20  # steps between progress-bar updates (the only host syncs)
    checkpoint_every_steps: int | None = None  # also save last.pt every N steps mid-epoch
    grad_clip: float | None = None  # max L2 norm of all gradients together; None: no clipping
    tensorboard: bool = False  # per-epoch metrics to OUT/tensorboard/ (needs tensorboard)
    freeze: list[str | int] = field(default_factory=list)  # module-path prefixes left out
    # of the optimizer (their BatchNorm statistics stay fixed too), e.g. [features]
    lr_groups: list[LrGroup] = field(default_factory=list)  # per-prefix learning rates; the
    # longest matching prefix wins
    unfreeze_at: int | None = None  # epoch (1-based) from which train.freeze is lifted
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    label_smoothing: float = 0.0  # probability mass spread evenly over all classes, training loss
    ema_decay: float = 0.0  # weight kept per optimizer step by the weight average; 0: no EMA
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # autocast dtype; auto: bf16 on CUDA (fp16 + loss scaling where bf16 is missing), fp32 on CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # NHWC weights and batches for conv nets; auto: on for conv nets on CUDA and CPU
    channels_last: Literal["auto"] | bool = "auto"
    compile: bool = False  # torch.compile the model; falls back to eager with a warning


@dataclass
class TaskConfig:
    """What is learned (cnnkit/tasks.py TASKS); the other keys are localization's."""

    name: str = "classification"  # classification or localization
    loss: Literal["squared", "bce-ce"] = "squared"  # squared: the seed's squared error on p_c,
    # box and class probabilities; bce-ce: BCE on p_c, CE on classes, box_loss on the box
    box_loss: Literal["mse", "smooth_l1", "giou"] = "mse"  # bce-ce's box term
    obj_weight: float = 1.0  # weight of the objectness term (1, 1, 1: the seed's formula)
    box_weight: float = 1.0  # weight of the box term
    cls_weight: float = 1.0  # weight of the class term
    threshold: float = 0.5  # p_c at or above which an object is declared (metrics, predict)


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    out: str | None = None  # run directory; None: runs/<config file stem>
    source: str = field(default="<config>", compare=False)  # where it came from, for errors


SECTIONS = ("model", "data", "train", "task", "out")


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config, apply `KEY.PATH=VALUE` overrides, check it, return a Config."""
    path = Path(path)
    raw = _read_yaml(path)
    for item in overrides:
        apply_override(raw, item, source=str(path))
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: Any, *, source: str = "<config>") -> Config:
    """Check a plain dict (e.g. one stored in a checkpoint) against the schema."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with sections {list(SECTIONS)}, "
                          f"found {_describe(raw)}")
    cfg = _build_dataclass(Config, raw, "", source, skip={"source"})
    cfg.source = source
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain data, as written into run directories and checkpoints."""
    data = dataclasses.asdict(cfg)
    data.pop("source")
    return data


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


def apply_override(raw: dict, item: str, *, source: str = "<config>") -> None:
    """Set `a.b.c=value` in a raw config dict; the value is read as one YAML scalar."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.lr=0.001")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({_first_line(exc)})") from None
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            child = node[_list_index(node, part, item, parts[:depth])]
        else:
            child = node.get(part) if isinstance(node, dict) else None
        if child is None:
            child = node.setdefault(part, {}) if isinstance(node, dict) else None
        if not isinstance(child, (dict, list)):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"--set {item!r}: {where} is {_describe(child)}, not a section")
        node = child
    if isinstance(node, list):  # a layer list: model.layers.classifier.6=[Linear, 4096, 10]
        node[_list_index(node, parts[-1], item, parts[:-1])] = value
    else:
        node[parts[-1]] = value


def _list_index(items: list, part: str, item: str, where: list[str]) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {item!r}: {'.'.join(where)} is a list of {len(items)} items; "
                          f"expected an index 0 to {len(items) - 1}, found {part!r}")
    return int(part)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
    return {} if raw is None else raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or _first_line(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{problem}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _build_dataclass(cls: type, raw: Any, path: str, source: str, skip: set[str] = frozenset()):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {path or 'config'}: expected a mapping, "
                          f"found {_describe(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise ConfigError(_unknown_key(source, path, key, list(fields)))
    values = {}
    for name, f in fields.items():
        key_path = f"{path}.{name}" if path else name
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], key_path, source)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{source}: {key_path}: required key is missing")
    return cls(**values)


def _unknown_key(source: str, path: str, key: Any, valid: list[str]) -> str:
    key_path = f"{path}.{key}" if path else str(key)
    close = difflib.get_close_matches(str(key), valid, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{source}: {key_path}: unknown key{hint} (valid: {', '.join(valid)})"


def _coerce(value: Any, hint: Any, path: str, source: str) -> Any:
    """Check one value against a type hint, converting only where YAML 1.1 is lossy."""
    if dataclasses.is_dataclass(hint):
        return _build_dataclass(hint, value, path, source)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(value, args, path, source)
    if origin is Literal:
        return _coerce_choice(value, args, path, source)
    if origin is list:
        return _coerce_list(value, args[0], path, source)
    return _coerce_scalar(value, hint, path, source)


def _coerce_union(value: Any, args: tuple, path: str, source: str) -> Any:
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    errors = []
    for option in options:
        try:
            return _coerce(value, option, path, source)
        except ConfigError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    wanted = " or ".join(_type_name(a) for a in args)
    raise ConfigError(f"{source}: {path}: expected {wanted}, found {_describe(value)}")


def _coerce_choice(value: Any, choices: tuple, path: str, source: str) -> Any:
    if value in choices:
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    listed = ", ".join(str(c) for c in choices)
    raise ConfigError(f"{source}: {path}: expected one of {listed}, found {_describe(value)}{hint}")


def _coerce_list(value: Any, item_hint: Any, path: str, source: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {path}: expected a list of {_type_name(item_hint)}, "
                          f"found {_describe(value)}")
    return [_coerce(v, item_hint, f"{path}.{i}", source) for i, v in enumerate(value)]


def _coerce_scalar(value: Any, hint: type, path: str, source: str) -> Any:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        value = _as_float(value)
        ok = isinstance(value, float)
    elif hint is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ConfigError(f"{source}: {path}: expected {_type_name(hint)}, "
                          f"found {_describe(value)}")
    return value


def _as_float(value: Any) -> Any:
    """Ints are floats; so are strings like '1e-3', which YAML 1.1 leaves as strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_name(hint: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             type(None): "null"}
    if hint in names:
        return names[hint]
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(c) for c in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
