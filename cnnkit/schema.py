"""The config schema: one dataclass per section, each field's type and, where it has one, its
range; `validate(cfg)` checks the ranges and the rules that join two keys, in one pass.

`config.load_config` coerces each value to its declared type, then calls `validate` before
anything reads the config: no data loaded, model built or file written. Every error is a
`ConfigError` of one line naming the file and the full key path, what was expected and what
was found. Checks that need the built model, the data on disk or the machine (a module path,
a dataset's size, a device) stay with the code that has them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from cnnkit.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds on a number (None: open on that side), and what an error says was expected.

    On a list field the range bounds each item. Every number in a config must be finite."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    text: str | None = None  # e.g. "a fraction in [0, 1]"; None: from the bounds and the type

    def holds(self, value: float) -> bool:
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def expected(self, value: Any) -> str:
        """`text`, else e.g. "a number > 0", "an integer >= 1", "a number in [0, 1)"."""
        if self.text:
            return self.text
        kind = "an integer" if isinstance(value, int) else "a number"
        low = next(((b, op, v) for b, op, v in (("[", ">=", self.ge), ("(", ">", self.gt))
                    if v is not None), None)
        high = next(((b, op, v) for b, op, v in (("]", "<=", self.le), (")", "<", self.lt))
                     if v is not None), None)
        if low and high:
            return f"{kind} in {low[0]}{low[2]}, {high[2]}{high[0]}"
        _, op, bound = low or high
        return f"{kind} {op} {bound}"


def ranged(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, text: str | None = None) -> Any:
    """A dataclass field whose values must lie in a range: `lr: float = ranged(0.005, gt=0)`."""
    bounds = Range(ge=ge, gt=gt, le=le, lt=lt, text=text)
    if factory is not None:
        return field(default_factory=factory, metadata={"range": bounds})
    return field(default=default, metadata={"range": bounds})


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
    aux_weight: float = ranged(0.3, ge=0)  # each auxiliary loss's weight in training, as in
    # the GoogLeNet paper
    # model-wide weight init after building, as torchvision's model classes do (models/init.py);
    # default: each layer keeps its own (PyTorch's for plain layers, torchvision's for blocks)
    init: Literal["default", "resnet", "vgg", "googlenet"] = "default"


@dataclass
class LocalizationDataConfig:
    """mnist-localization canvases and localization-csv images (cnnkit/data/localization.py)."""

    # canvases and csv images are size × size pixels
    size: int = ranged(64, ge=1, text="a positive size in pixels")
    digit_size: list[int] = field(default_factory=lambda: [20, 44])  # px, side of the pasted
    # 28×28 MNIST frame, drawn uniformly from [min, max]
    # share of canvases with no digit (the seed's "nothing")
    empty: float = ranged(0.2, ge=0, lt=1, text="a share in [0, 1)")
    # std of Gaussian background noise, on the [0, 1] pixel scale
    noise: float = ranged(0.0, ge=0, text="a std >= 0")
    seed: int = 0  # canvases are a function of this seed (not train.seed): the dataset is fixed
    channels: Literal[1, 3] = 3  # localization-csv: 1 (grayscale) or 3 (RGB)


@dataclass
class AugmentConfig:
    """Batched augmentation of training batches on the device (data/augment.py); all off."""

    # largest shift, a fraction of height and width (0.1: ±2.8 px at 28)
    translate: float = ranged(0.0, ge=0, le=1, text="a fraction in [0, 1]")
    rotate: float = ranged(0.0, ge=0, le=180, text="degrees in [0, 180]")  # largest, either way
    # largest zoom change: the factor is drawn from [1 - scale, 1 + scale]
    scale: float = ranged(0.0, ge=0, lt=1, text="a fraction in [0, 1)")
    # pixels of zero padding on each side before a random crop to size
    crop_padding: int = ranged(0, ge=0, text="pixels >= 0")
    hflip: bool = False  # mirror half the images left-right (wrong for digits)
    # side of one square erased to the dataset mean, pixels, at most the image's side; 0: off
    cutout: int = ranged(0, ge=0, text="a side in pixels >= 0")


@dataclass
class DataConfig:
    name: str = "mnist-sample"
    root: str | None = None  # folder of on-disk datasets (mnist, imagefolder)
    train_size: int | None = ranged(None, ge=1)  # carved from the training files, stratified
    # by class; 0 validation examples: a run without a validation split (train_* monitor only)
    val_size: int | None = ranged(None, ge=0)  # None: the dataset's default (mnist-sample:
    # 4,000 and 1,000)
    mean: list[float] | None = None  # per channel, on the [0, 1] scale; None: dataset default
    std: list[float] | None = ranged(None, gt=0)
    download: bool = False  # fetch through torchvision when the files are missing
    # imagefolder: side of the square crop fed to the model, in pixels
    image_size: int = ranged(224, ge=1, text="a positive size in pixels")
    # imagefolder: DataLoader worker processes decoding images (0: in-process)
    workers: int = ranged(4, ge=0, text="0 or more processes")
    skip_bad: bool = False  # imagefolder: skip files that cannot be decoded (one warning)
    classes: list[int | str] | None = None  # keep only these classes (by name, e.g. digits
    # [5, 6, 7]), relabelled 0..K-1 in this order; None: all
    # keep this many training examples of each class (a fixed random subset); None: all
    train_per_class: int | None = ranged(None, ge=1)
    localization: LocalizationDataConfig = field(default_factory=LocalizationDataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training split only


@dataclass
class LrGroup:
    modules: list[str | int]  # module-path prefixes, e.g. [features] or [conv1, bn1, layer1]
    lr: float = ranged(gt=0)  # their learning rate; parameters in no group use train.lr


@dataclass
class ScheduleConfig:
    """The learning rate per optimizer step, as a factor of train.lr (training/schedules.py)."""

    name: Literal["constant", "step", "multistep", "cosine", "onecycle"] = "constant"
    warmup_epochs: float = ranged(0.0, ge=0)  # linear ramp to train.lr over this many epochs
    # step: epochs between two multiplications by gamma
    step_size: float = ranged(1.0, gt=0, text="a positive number of epochs")
    # multistep: epochs where lr *= gamma
    milestones: list[float] = ranged(factory=list, ge=0)
    gamma: float = ranged(0.1, gt=0, le=1, text="a factor in (0, 1]")  # step, multistep: the
    # factor applied at each decay
    min_lr: float = ranged(0.0, ge=0)  # cosine: the learning rate the curve ends at
    # onecycle: fraction of all steps spent rising to train.lr
    pct_start: float = ranged(0.3, gt=0, lt=1, text="a fraction in (0, 1)")
    div_factor: float = ranged(25.0, ge=1)  # onecycle: starts at train.lr / div_factor
    # onecycle: ends at train.lr / div_factor / final_div_factor
    final_div_factor: float = ranged(1.0e4, ge=1)


@dataclass
class EarlyStoppingConfig:
    # epochs without improvement of train.monitor before stopping; 0: off
    patience: int = ranged(0, ge=0)
    # smallest change of train.monitor that counts as an improvement
    min_delta: float = ranged(0.0, ge=0)


@dataclass
class TrainConfig:
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = ranged(0.005, gt=0)
    batch_size: int = ranged(1000, ge=1, text="a positive integer")
    epochs: int = ranged(10, ge=0)
    weight_decay: float = ranged(0.0, ge=0)
    momentum: float = ranged(0.9, ge=0)  # sgd only
    nesterov: bool = False  # sgd only; needs momentum > 0
    seed: int = 0
    device: str = "auto"  # auto: cuda, then mps, then cpu
    # decides best.pt (and early stopping); train_*: for runs without a validation split
    monitor: Literal["val_acc", "val_loss", "train_acc", "train_loss"] = "val_acc"
    # steps between progress-bar updates (the only host syncs)
    log_every: int = ranged(20, ge=1, text="a positive integer")
    # also save last.pt every N steps mid-epoch
    checkpoint_every_steps: int | None = ranged(None, ge=1,
                                                text="a positive number of steps or null")
    # max L2 norm of all gradients together; None: no clipping
    grad_clip: float | None = ranged(None, gt=0, text="a positive max norm or null")
    tensorboard: bool = False  # per-epoch metrics to OUT/tensorboard/ (needs tensorboard)
    freeze: list[str | int] = field(default_factory=list)  # module-path prefixes left out
    # of the optimizer (their BatchNorm statistics stay fixed too), e.g. [features]
    lr_groups: list[LrGroup] = field(default_factory=list)  # per-prefix learning rates; the
    # longest matching prefix wins
    unfreeze_at: int | None = None  # epoch (1-based) from which train.freeze is lifted
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # probability mass spread evenly over all classes, training loss
    label_smoothing: float = ranged(0.0, ge=0, lt=1, text="a fraction in [0, 1)")
    # weight kept per optimizer step by the weight average; 0: no EMA
    ema_decay: float = ranged(0.0, ge=0, lt=1, text="a fraction in (0, 1), or 0 for no average")
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    # autocast dtype; auto: bf16 on CUDA (fp16 + loss scaling where bf16 is missing), fp32 on CPU
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # NHWC weights and batches for conv nets; auto: on for conv nets on CUDA and CPU
    channels_last: Literal["auto"] | bool = "auto"
    compile: bool = False  # torch.compile the model; falls back to eager with a warning


@dataclass
class TaskConfig:
    """What is learned (tasks/__init__.py TASKS); the other keys are localization's."""

    name: str = "classification"  # classification or localization
    loss: Literal["squared", "bce-ce"] = "squared"  # squared: the seed's squared error on p_c,
    # box and class probabilities; bce-ce: BCE on p_c, CE on classes, box_loss on the box
    box_loss: Literal["mse", "smooth_l1", "giou"] = "mse"  # bce-ce's box term
    # weights of the objectness, box and class terms (1, 1, 1: the seed's formula)
    obj_weight: float = ranged(1.0, ge=0)
    box_weight: float = ranged(1.0, ge=0)
    cls_weight: float = ranged(1.0, ge=0)
    # p_c at or above which an object is declared (metrics, predict)
    threshold: float = ranged(0.5, ge=0, le=1)


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    out: str | None = None  # run directory; None: runs/<config file stem>
    source: str = field(default="<config>", compare=False)  # where it came from, for errors


def validate(cfg: Config) -> Config:
    """Check every range and cross-key rule of a coerced config; returns it unchanged."""
    for path, value, bounds in _numbers(cfg, ""):
        if isinstance(value, float) and not math.isfinite(value):
            expected = bounds.text if bounds and bounds.text else "a finite number"
            _fail(cfg, path, f"expected {expected}, found {value}")
        if bounds is not None and not bounds.holds(value):
            _fail(cfg, path, f"expected {bounds.expected(value)}, found {value}")
    for rule in RULES:
        problem = rule(cfg)
        if problem:
            _fail(cfg, *problem)
    return cfg


def _fail(cfg: Config, path: str, problem: str) -> typing.NoReturn:
    raise ConfigError(f"{cfg.source}: {path}: {problem}")


_hints = functools.cache(typing.get_type_hints)  # per schema class: its fields' types


def _numbers(node: Any, path: str, bounds: Range | None = None
             ) -> Iterator[tuple[str, int | float, Range | None]]:
    """(key path, value, its range) for each number in typed fields; Any fields are skipped."""
    if dataclasses.is_dataclass(node):
        hints = _hints(type(node))
        for f in dataclasses.fields(node):
            if hints[f.name] is not Any:
                yield from _numbers(getattr(node, f.name), f"{path}.{f.name}" if path else f.name,
                                    f.metadata.get("range"))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _numbers(item, f"{path}.{i}", bounds)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node, bounds


# -- rules on a whole list or joining keys: each returns (key path, problem) or None ---------

Problem = tuple[str, str] | None

# the datasets read from a folder (data.root), and what that folder holds; the others are
# made in memory (mnist-sample, mnist-localization). Names only: the loaders are cnnkit.data's.
ROOT_HOLDS = {
    "mnist": "MNIST/raw/ (torchvision's layout)",
    "imagefolder": "train/ and val/ (each with one folder per class)",
    "localization-csv": "train.csv and val.csv",
}


def _input_is_an_example_shape(cfg: Config) -> Problem:
    shape = cfg.model.input
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        return "model.input", f"expected 1 to 3 positive sizes (C, H, W), found {list(shape)}"
    return None


def _root_where_read_from_disk(cfg: Config) -> Problem:
    d = cfg.data
    if d.name in ROOT_HOLDS and d.root is None:
        return "data.root", f"{d.name} needs the folder that holds {ROOT_HOLDS[d.name]}, found null"
    return None


def _imagefolder_splits_as_they_are(cfg: Config) -> Problem:
    d = cfg.data
    for key in ("train_size", "val_size"):
        if d.name == "imagefolder" and getattr(d, key) is not None:
            return f"data.{key}", (f"imagefolder takes its splits from ROOT/train and ROOT/val "
                                   f"as they are; found {getattr(d, key)}, expected null")
    return None


def _digits_fit_the_canvas(cfg: Config) -> Problem:
    loc = cfg.data.localization
    low, high = (loc.digit_size + [0, 0])[:2]
    if cfg.data.name == "mnist-localization" and (
            len(loc.digit_size) != 2 or not 8 <= low <= high <= loc.size):
        return "data.localization.digit_size", (
            f"expected [min, max] pixels with 8 <= min <= max <= data.localization.size "
            f"({loc.size}), found {loc.digit_size}")
    return None


def _nesterov_needs_momentum(cfg: Config) -> Problem:
    t = cfg.train
    if t.optimizer == "sgd" and t.nesterov and t.momentum <= 0:
        return "train.nesterov", f"needs train.momentum > 0, found {t.momentum}"
    return None


def _unfreeze_needs_freeze(cfg: Config) -> Problem:
    t = cfg.train
    if t.unfreeze_at is not None and (t.unfreeze_at < 1 or not t.freeze):
        return "train.unfreeze_at", (f"expected an epoch >= 1 with a non-empty train.freeze, "
                                     f"found {t.unfreeze_at} with freeze {list(t.freeze)}")
    return None


def _lr_groups_are_disjoint(cfg: Config) -> Problem:
    seen: set[str] = set()
    for i, group in enumerate(cfg.train.lr_groups):
        for prefix in map(str, group.modules):
            if prefix in seen:
                return (f"train.lr_groups.{i}.modules",
                        f"'{prefix}' is already in an earlier group")
            seen.add(prefix)
    return None


def _schedule_fits(cfg: Config) -> Problem:
    s, lr = cfg.train.schedule, cfg.train.lr
    if s.name == "multistep" and not s.milestones:
        return "train.schedule.milestones", "expected a non-empty list of epochs, found []"
    if s.name == "cosine" and s.min_lr > lr:
        return "train.schedule.min_lr", (f"expected a learning rate in [0, train.lr = {lr}], "
                                         f"found {s.min_lr}")
    if s.name == "onecycle" and s.warmup_epochs > 0:
        return "train.schedule.warmup_epochs", (f"onecycle has its own warmup (pct_start); "
                                                f"found warmup_epochs {s.warmup_epochs}")
    return None


def _cutout_fits_the_image(cfg: Config) -> Problem:
    shape, cutout = cfg.model.input, cfg.data.augment.cutout
    if len(shape) == 3 and cutout > max(shape[1:]):  # C, H, W
        return "data.augment.cutout", (f"expected a side in pixels from 0 to {max(shape[1:])}, "
                                       f"found {cutout}")
    return None


def _augment_is_for_tensors(cfg: Config) -> Problem:
    if cfg.data.name == "imagefolder" and cfg.data.augment != AugmentConfig():
        return "data.augment", ("augments in-memory datasets on the device; imagefolder uses "
                                "torchvision's transforms (RandomResizedCrop, flip)")
    return None


def _no_val_split(cfg: Config) -> Problem:
    """data.val_size 0 means no validation split: nothing may watch one."""
    if cfg.data.val_size != 0:
        return None
    t = cfg.train
    if t.monitor.startswith("val_"):
        return "train.monitor", (f"{t.monitor} needs a validation split, but data.val_size is "
                                 f"0; monitor train_loss or train_acc, or set data.val_size")
    if t.early_stopping.patience:
        return "train.early_stopping.patience", (
            f"{t.early_stopping.patience} turns early stopping on, which needs a validation "
            f"split, but data.val_size is 0; set patience 0 or data.val_size")
    return None


RULES: list[Callable[[Config], Problem]] = [
    _input_is_an_example_shape, _nesterov_needs_momentum, _unfreeze_needs_freeze,
    _lr_groups_are_disjoint, _schedule_fits, _cutout_fits_the_image, _augment_is_for_tensors,
    _no_val_split, _root_where_read_from_disk, _imagefolder_splits_as_they_are,
    _digits_fit_the_canvas]
