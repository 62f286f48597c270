"""The one validation pass: every range declared in `cnnkit.schema` and every rule that joins
two keys, checked on a coerced config before anything reads it (no data loaded, model built
or file written). Every error is a `ConfigError` of one line: the file, the full key path,
what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any

from cnnkit.errors import ConfigError
from cnnkit.schema import (
    CLASS_WEIGHTED,
    SOFT_TARGETS,
    TASK_METRICS,
    AugmentConfig,
    Config,
    DataConfig,
    Range,
)

# what torch can hold: a learning rate (or any float) past float32's largest overflows inside
# the optimizer, a seed past int64 inside torch.manual_seed; both after the run has started
FLOAT32_MAX = 3.4028234663852886e38
INT64 = (-(2**63), 2**63 - 1)


def validate(cfg: Config) -> Config:
    """Check every range and cross-key rule of a coerced config; returns it with model.input
    filled in where it was left out (`data_input`)."""
    if cfg.model.input is None:
        cfg.model.input = data_input(cfg.data)
    for path, value, bounds in _numbers(cfg, ""):
        if isinstance(value, float) and not math.isfinite(value):
            expected = bounds.text if bounds and bounds.text else "a finite number"
            _fail(cfg, path, f"expected {expected}, found {value}")
        if isinstance(value, float) and abs(value) > FLOAT32_MAX:
            _fail(cfg, path, f"expected a number of size at most 3.4e38 (torch keeps it as "
                             f"float32), found {value:g}")
        if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            _fail(cfg, path, f"expected an integer that fits in 64 bits, found {value}")
        if bounds is not None and not bounds.holds(value):
            _fail(cfg, path, f"expected {bounds.expected(value)}, found {value}")
    for rule in RULES:
        problem = rule(cfg)
        if problem:
            _fail(cfg, *problem)
    return cfg


# the optional packages a config can ask for: what asks (as the message shows it) -> (whether
# the config asks, modules, how to get them). Checked when a run starts (check_packages), not
# by validate: a checkpoint of a run that logged to TensorBoard still evaluates without it.
OPTIONAL_PACKAGES: dict[str, tuple[Callable[[Config], bool], tuple[str, ...], str]] = {
    "train.tensorboard: true": (lambda cfg: cfg.train.tensorboard, ("tensorboard",),
                                "pip install tensorboard, or set train.tensorboard: false"),
}


def check_packages(cfg: Config) -> None:
    """One ConfigError line for the first optional package the config asks for that is not
    installed; training calls it right after validation, before any data is read or folder
    made."""
    for what, (asks, modules, install) in OPTIONAL_PACKAGES.items():
        missing = [name for name in modules if not _installed(name)] if asks(cfg) else []
        if missing:
            plural = len(missing) > 1
            raise ConfigError(f"{cfg.source}: {what} needs the {' and '.join(missing)} "
                              f"package{'s' if plural else ''}, which {'are' if plural else 'is'}"
                              f" not installed ({install})")


def _installed(name: str) -> bool:
    import importlib.util
    import sys

    if name in sys.modules:  # None there: an import of it fails
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


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


# model.input where a config leaves it out, by dataset
def data_input(data: DataConfig) -> list[int]:
    if data.name == "imagefolder":
        return [3, data.image_size, data.image_size]
    if data.name in ("mnist-localization", "localization-csv"):
        channels = 1 if data.name == "mnist-localization" else data.localization.channels
        return [channels, data.localization.size, data.localization.size]
    return [1, 28, 28]  # mnist, mnist-sample


# model.num_classes auto, where there is no data to count (summary, `cnnkit configs`)
FALLBACK_CLASSES = {"imagefolder": 1000, "mnist": 10, "mnist-sample": 10,
                    "mnist-localization": 10, "localization-csv": 10}


def declared_classes(cfg: Config) -> int | None:
    """model.num_classes as a number: as set, or for auto the count data.classes keeps, else
    the dataset's fallback. None where the config does not use it."""
    n = cfg.model.num_classes
    if n != "auto":
        return n
    if cfg.data.classes is not None:
        return len(cfg.data.classes)
    return FALLBACK_CLASSES.get(cfg.data.name, 10)


def _input_is_an_example_shape(cfg: Config) -> Problem:
    shape = cfg.model.input
    if not 1 <= len(shape) <= 3 or min(shape) < 1:
        return "model.input", f"expected 1 to 3 positive sizes (C, H, W), found {list(shape)}"
    if max(shape) > MAX_SIZE:
        return "model.input", (f"expected sizes (C, H, W) of at most {MAX_SIZE}, found "
                               f"{list(shape)}")
    if math.prod(shape) > MAX_INPUT_VALUES:
        return "model.input", (f"expected at most {MAX_INPUT_VALUES:,} values an example "
                               f"(C × H × W), found {list(shape)}")
    return None


# an example's size, a layer's repeat count and a learning rate past these are typing slips,
# not models: the builder would allocate without end (the largest in configs/: 224 and 36), an
# optimizer overflow (train.lr: 1e39 inside Adam)
MAX_SIZE = 65536
# values in one example: 2**26 float32s are 256 MB, past a 3×4096×4096 photo (50 M); what
# predict allocates per image before the model runs (a 60000² input: 14 GB)
MAX_INPUT_VALUES = 2**26
MAX_REPEAT = 10_000
MAX_LR = 1e3


def _sizes_are_sane(cfg: Config) -> Problem:
    if cfg.data.image_size > MAX_SIZE:
        return "data.image_size", (f"expected a size in pixels of at most {MAX_SIZE}, found "
                                   f"{cfg.data.image_size}")
    if cfg.train.lr > MAX_LR:
        return "train.lr", f"expected a learning rate of at most {MAX_LR:g}, found {cfg.train.lr}"
    return None


def _repeats_are_sane(cfg: Config) -> Problem:
    """[Repeat, N, LAYER] with N up to MAX_REPEAT; the builder checks the rest of its form."""
    stack: list[tuple[str, Any]] = [("model.layers", cfg.model.layers)]
    while stack:  # iterative: a config nested deep must not recurse here
        path, node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) \
            if isinstance(node, list) else ()
        if isinstance(node, list) and len(node) >= 2 and node[0] == "Repeat" \
                and isinstance(node[1], int) and node[1] > MAX_REPEAT:
            return f"{path}.1", (f"expected a repeat count from 1 to {MAX_REPEAT:,}, "
                                 f"found {node[1]}")
        stack.extend((f"{path}.{key}", child) for key, child in items)
    return None


def _paths_have_no_nul(cfg: Config) -> Problem:
    """A NUL byte cannot be in a file name: open() and mkdir() raise ValueError on it."""
    for path, value in (("out", cfg.out), ("data.root", cfg.data.root),
                        ("model.weights", cfg.model.weights)):
        if isinstance(value, str) and "\x00" in value:
            return path, f"expected a path, found {value[:60]!r} (a NUL byte is in no file name)"
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


# data.augment's keys by what they apply to: the batches of tensors in memory (the digit
# sets, augmented on the device), the images of class folders (torchvision's transforms in
# the loader's workers), and batch mixing (soft class targets: classification only); hflip
# applies to all
TENSOR_KEYS = ("translate", "rotate", "scale", "crop_padding", "elastic", "elastic_sigma",
               "cutout")
FOLDER_KEYS = ("crop_scale", "crop_ratio", "color_jitter", "policy", "randaugment_n",
               "randaugment_m", "random_erasing", "interpolation")
MIX_KEYS = ("mixup_alpha", "cutmix_alpha", "mix_prob", "mix_switch_prob")
_AUGMENT_DEFAULTS = AugmentConfig()


def augment_set(cfg: Config, keys: tuple[str, ...]) -> list[str]:
    """The keys among `keys` whose value differs from the default."""
    aug = cfg.data.augment
    return [k for k in keys if getattr(aug, k) != getattr(_AUGMENT_DEFAULTS, k)]


def _augment_fits_the_dataset(cfg: Config) -> Problem:
    name, aug = cfg.data.name, cfg.data.augment
    folder = name == "imagefolder"
    for key in augment_set(cfg, TENSOR_KEYS if folder else FOLDER_KEYS):
        other = ("the digit sets' batches on the device" if folder
                 else "class folders (imagefolder), image by image")
        return f"data.augment.{key}", f"applies to {other}, not to {name}"
    mixed = augment_set(cfg, MIX_KEYS)
    if mixed and cfg.task.name not in SOFT_TARGETS:
        return f"data.augment.{mixed[0]}", (f"batch mixing makes soft class targets "
                                            f"({', '.join(SOFT_TARGETS)}); task is {cfg.task.name} "
                                            f"({name})")
    if mixed and not (aug.mixup_alpha or aug.cutmix_alpha):
        return f"data.augment.{mixed[0]}", ("applies to batch mixing, which is off (set "
                                            "data.augment.mixup_alpha or cutmix_alpha > 0)")
    for key in ("crop_scale", "crop_ratio"):
        pair = getattr(aug, key)
        if len(pair) != 2 or pair[0] > pair[1]:
            return f"data.augment.{key}", f"expected [low, high] with low <= high, found {pair}"
    if aug.policy != "randaugment":
        for key in augment_set(cfg, ("randaugment_n", "randaugment_m")):
            return f"data.augment.{key}", (f"applies to policy randaugment; data.augment.policy "
                                           f"is {aug.policy or 'null'}")
    return None


def _val_resize_is_for_folders(cfg: Config) -> Problem:
    d = cfg.data
    for key in ("val_resize", "val_crop"):
        if getattr(d, key) is not None and d.name != "imagefolder":
            return f"data.{key}", (f"resizes class folders (imagefolder) for evaluation; "
                                   f"{d.name} is fed at model.input's size")
    if d.val_resize is not None and d.val_crop is not None and d.val_crop > d.val_resize:
        return "data.val_crop", (f"expected a crop of at most data.val_resize ({d.val_resize}) "
                                 f"pixels, found {d.val_crop}")
    for key in ("val_resize", "val_crop"):
        if (getattr(d, key) or 0) > MAX_SIZE:
            return f"data.{key}", (f"expected a size in pixels of at most {MAX_SIZE}, found "
                                   f"{getattr(d, key)}")
    return None


def _decode_is_for_folders(cfg: Config) -> Problem:
    d = cfg.data
    if d.decode != "cpu" and d.name != "imagefolder":
        return "data.decode", (f"{d.decode} decodes class folders' JPEGs (imagefolder); {d.name} "
                               f"is held as tensors, with nothing to decode")
    return None


def _no_val_split(cfg: Config) -> Problem:
    """data.val_size 0 means no validation split: best.pt is the last epoch and the monitor
    reads training metrics, so nothing can stop early on it."""
    t = cfg.train
    if cfg.data.val_size == 0 and t.early_stopping.patience:
        return "train.early_stopping.patience", (
            f"{t.early_stopping.patience} turns early stopping on, which needs a validation "
            f"split, but data.val_size is 0 (every example trains); set patience 0 or "
            f"data.val_size")
    return None


FOLDED = ("mnist-sample", "mnist")  # the datasets whose training files data.folds cuts


def _folds_make_the_splits(cfg: Config) -> Problem:
    d = cfg.data
    if d.folds is None:
        if d.fold:
            return "data.fold", f"{d.fold} picks a fold, but data.folds is null; set data.folds"
        return None
    if d.name not in FOLDED:
        return "data.folds", (f"cross-validation folds cut {' and '.join(FOLDED)}; "
                              f"{d.name} has its own splits")
    if d.fold >= d.folds:
        return "data.fold", f"expected a fold from 0 to {d.folds - 1} (0-based), found {d.fold}"
    for key in ("train_size", "val_size"):
        if getattr(d, key) is not None:
            return f"data.{key}", (f"data.folds ({d.folds}) makes the splits; found "
                                   f"{getattr(d, key)}, expected null")
    return None


def _balanced_metrics_are_classifications(cfg: Config) -> Problem:
    t, name = cfg.train, cfg.task.name
    reported = TASK_METRICS.get(name)  # an unknown task: build_task names the valid ones
    if reported is not None and t.monitor.split("_", 1)[1] not in reported:
        owners = [k for k, metrics in TASK_METRICS.items()
                  if t.monitor.split("_", 1)[1] in metrics]
        return "train.monitor", f"{t.monitor} is a {' or '.join(owners)} metric; task is {name}"
    if reported is not None and name not in CLASS_WEIGHTED and cfg.task.class_weights is not None:
        return "task.class_weights", (f"weights {' and '.join(CLASS_WEIGHTED)}'s loss; task is "
                                      f"{name}")
    return None


RULES: list[Callable[[Config], Problem]] = [
    _input_is_an_example_shape, _repeats_are_sane, _sizes_are_sane, _nesterov_needs_momentum,
    _unfreeze_needs_freeze,
    _lr_groups_are_disjoint, _schedule_fits, _cutout_fits_the_image, _augment_fits_the_dataset,
    _val_resize_is_for_folders, _decode_is_for_folders,
    _no_val_split, _folds_make_the_splits, _paths_have_no_nul, _root_where_read_from_disk,
    _imagefolder_splits_as_they_are, _digits_fit_the_canvas, _balanced_metrics_are_classifications]
