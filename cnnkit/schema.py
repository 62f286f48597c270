"""The config schema: one dataclass per section, each field's type and, where it has one, its
range (`ranged(default, gt=..., ge=..., le=...)`); `cnnkit.validate` checks those ranges and the
rules that join two keys, in one pass.

`config.load_config` coerces each value to its declared type, then calls `validate` before
anything reads the config: no data loaded, model built or file written. Every error is a
`ConfigError` of one line naming the file and the full key path, what was expected and what
was found. Checks that need the built model, the data on disk or the machine (a module path,
a dataset's size, a device) stay with the code that has them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


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


# seeds are mixed with epoch and batch numbers into 63-bit generator seeds (data/augment.py,
# data/tensors.py: seed * 1_000_003 + epoch); numpy's range keeps every mix inside int64
SEEDS = 2**32
SEED_TEXT = "a seed from 0 to 4294967295 (2**32 - 1)"


def ranged(default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, text: str | None = None) -> Any:
    """A dataclass field whose values must lie in a range: `lr: float = ranged(0.005, gt=0)`."""
    bounds = Range(ge=ge, gt=gt, le=le, lt=lt, text=text)
    if factory is not None:
        return field(default_factory=factory, metadata={"range": bounds})
    return field(default=default, metadata={"range": bounds})


@dataclass(kw_only=True)
class ModelConfig:
    # C, H, W of one example, declared once; shapes are propagated from it. None: the data's
    # (validate.data_input): imagefolder [3, data.image_size, data.image_size], mnist and
    # mnist-sample [1, 28, 28], the localization sets [channels, size, size]
    input: list[int] | None = None
    layers: Any  # the layer language (docs/DESIGN.md); checked by the builder
    # classes, where layer specs write `num_classes` (e.g. [Linear, 512, num_classes]); auto:
    # the training data's count (len(data.classes) where set); without data (summary,
    # `cnnkit configs`) auto falls back to validate.FALLBACK_CLASSES: 1000 for imagefolder
    # (the ImageNet zoo), 10 for the digit datasets. None: no layer refers to it
    num_classes: int | Literal["auto"] | None = ranged(None, ge=1, text="a positive count, "
                                                       "auto or null")
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
    # canvases are a function of this seed (not train.seed): the dataset is fixed
    seed: int = ranged(0, ge=0, lt=SEEDS, text=SEED_TEXT)
    channels: Literal[1, 3] = 3  # localization-csv: 1 (grayscale) or 3 (RGB)


@dataclass
class AugmentConfig:
    """Augmentation of the training split. The digit sets (tensors in memory) are augmented in
    whole batches on the device (data/augment.py: translate to cutout); class folders image by
    image in the loader's workers with torchvision.transforms.v2 (data/transforms.py: crop_scale
    to interpolation). Batch mixing (mixup_alpha to mix_switch_prob, data/mixing.py) is for
    classification on either. A key set for a dataset it does not apply to is an error
    (validate.py AUGMENT_KEYS)."""

    # largest shift, a fraction of height and width (0.1: ±2.8 px at 28)
    translate: float = ranged(0.0, ge=0, le=1, text="a fraction in [0, 1]")
    rotate: float = ranged(0.0, ge=0, le=180, text="degrees in [0, 180]")  # largest, either way
    # largest zoom change: the factor is drawn from [1 - scale, 1 + scale]
    scale: float = ranged(0.0, ge=0, lt=1, text="a fraction in [0, 1)")
    # pixels of zero padding on each side before a random crop to size
    crop_padding: int = ranged(0, ge=0, text="pixels >= 0")
    # elastic distortion (Simard et al. 2003): a random displacement field, uniform in
    # [-1, 1] per pixel, smoothed by a Gaussian of elastic_sigma px and scaled by this; 0: off
    elastic: float = ranged(0.0, ge=0, text="a field scale >= 0 (34: Simard's)")
    elastic_sigma: float = ranged(4.0, gt=0, text="a Gaussian std in pixels > 0")
    # mirror half the images left-right; null: the dataset's default, on for class folders
    # (torchvision's recipe), off for the others (wrong for digits)
    hflip: bool | None = None
    # side of one square erased to the dataset mean, pixels, at most the image's side; 0: off.
    # Kept beside random_erasing: a fixed square on whole batches on the device, for the digits
    cutout: int = ranged(0, ge=0, text="a side in pixels >= 0")
    # class folders: RandomResizedCrop's range of the crop's area (a fraction of the image's)
    # and of its aspect ratio (width / height); torchvision's defaults
    crop_scale: list[float] = ranged(factory=lambda: [0.08, 1.0], gt=0, le=1,
                                     text="fractions of the area in (0, 1]")
    crop_ratio: list[float] = ranged(factory=lambda: [3 / 4, 4 / 3], gt=0,
                                     text="aspect ratios > 0")
    # class folders: ColorJitter's brightness, contrast and saturation, each a factor drawn
    # from [1 - c, 1 + c] (timm's --color-jitter); 0: off
    color_jitter: float = ranged(0.0, ge=0, text="a jitter strength >= 0")
    # class folders: an augmentation policy after the crop and flip, torchvision's:
    # TrivialAugmentWide, RandAugment(randaugment_n, randaugment_m), AutoAugment (IMAGENET)
    policy: Literal["trivialaugment", "randaugment", "autoaugment"] | None = None
    randaugment_n: int = ranged(2, ge=1, text="a number of operations >= 1")
    randaugment_m: int = ranged(9, ge=0, le=30, text="a magnitude in [0, 30]")
    # class folders: RandomErasing's probability per image (a random rectangle set to the
    # dataset's mean, i.e. 0 after normalization, as torchvision's recipe erases); 0: off
    random_erasing: float = ranged(0.0, ge=0, le=1, text="a probability in [0, 1]")
    # class folders: the resampling filter of the crops (training) and the resize (evaluation)
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    # batch mixing (classification): the Beta(alpha, alpha) of MixUp and CutMix
    # (torchvision.transforms.v2); 0: that one off (torchvision's recipe: 0.2 and 1.0)
    mixup_alpha: float = ranged(0.0, ge=0, text="a Beta parameter >= 0")
    cutmix_alpha: float = ranged(0.0, ge=0, text="a Beta parameter >= 0")
    # timm's additions: the probability a batch is mixed, and that a mixed batch uses CutMix
    # when both are on; the defaults are torchvision's (every batch, 50/50)
    mix_prob: float = ranged(1.0, ge=0, le=1, text="a probability in [0, 1]")
    mix_switch_prob: float = ranged(0.5, ge=0, le=1, text="a probability in [0, 1]")


@dataclass
class DataConfig:
    name: str = "mnist-sample"
    root: str | None = None  # folder of on-disk datasets (mnist, imagefolder)
    train_size: int | None = ranged(None, ge=1)  # carved from the training files, stratified
    # by class; 0 validation examples: a run without a validation split (best.pt is the last
    # epoch, the monitor reads train_*, no early stopping)
    val_size: int | None = ranged(None, ge=0)  # None: the dataset's default (mnist-sample:
    # 4,000 and 1,000); 0 and train_size None: every example trains (mnist-sample: 5,000)
    # K-fold cross-validation (mnist-sample, mnist): the training files cut into `folds`
    # stratified parts, fold `fold` (0-based) validates and the others train; None: off
    folds: int | None = ranged(None, ge=2, text="2 or more folds, or null")
    fold: int = ranged(0, ge=0, text="a fold index >= 0 (0-based)")
    mean: list[float] | None = None  # per channel, on the [0, 1] scale; None: dataset default
    std: list[float] | None = ranged(None, gt=0)
    download: bool = False  # fetch through torchvision when the files are missing
    # imagefolder: side of the square crop fed to the model, in pixels (and model.input's H, W)
    image_size: int = ranged(224, ge=1, text="a positive size in pixels")
    # imagefolder, evaluation (FixRes): the short side is resized to val_resize, then the
    # centre val_crop × val_crop goes to the model; null: val_crop / 0.875 and image_size
    # (torchvision's recipe: image_size 176, val_resize 232, val_crop 224)
    val_resize: int | None = ranged(None, ge=1, text="a positive size in pixels or null")
    val_crop: int | None = ranged(None, ge=1, text="a positive size in pixels or null")
    # imagefolder: DataLoader worker processes decoding images (0: in-process)
    workers: int = ranged(4, ge=0, text="0 or more processes")
    skip_bad: bool = False  # imagefolder: skip files that cannot be decoded (one warning)
    # imagefolder: where JPEGs are decoded: cpu (the loader's workers, PIL, at a reduced size
    # where the crop allows) or gpu (nvJPEG on the CUDA device the run trains on, with the
    # transforms; data/device_decode.py); a speed setting: the same draws either way
    decode: Literal["cpu", "gpu"] = "cpu"
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
    lr: float = ranged(0.005, gt=0)  # at most MAX_LR (validate.py)
    batch_size: int = ranged(1000, ge=1, text="a positive integer")
    # micro-batches each batch is split into: the same update (BatchNorm statistics aside) in
    # 1/N of the activation memory
    accumulate_steps: int = ranged(1, ge=1, text="a positive integer")
    epochs: int = ranged(10, ge=0)
    weight_decay: float = ranged(0.0, ge=0)
    # weight decay of normalization layers' parameters (BatchNorm, LayerNorm, GroupNorm, ...)
    # and of every bias (a norm layer's too: bias_weight_decay wins, as in torchvision's
    # set_weight_decay); null: weight_decay; 0 exempts them (torchvision's ResNet-50 recipe:
    # norm 0.0, bias null). Shown in the start header; models/freeze.py param_groups
    norm_weight_decay: float | None = ranged(None, ge=0, text="a weight decay >= 0 or null")
    bias_weight_decay: float | None = ranged(None, ge=0, text="a weight decay >= 0 or null")
    momentum: float = ranged(0.9, ge=0)  # sgd only
    nesterov: bool = False  # sgd only; needs momentum > 0
    seed: int = ranged(0, ge=0, lt=SEEDS, text=SEED_TEXT)
    device: str = "auto"  # auto: cuda, then mps, then cpu
    # decides best.pt (and early stopping); without a validation split val_* reads train_*
    monitor: Literal["val_acc", "val_loss", "val_balanced_acc", "val_macro_f1", "train_acc",
                     "train_loss", "train_balanced_acc", "train_macro_f1"] = "val_acc"
    # steps between progress-bar updates (the only host syncs)
    log_every: int = ranged(20, ge=1, text="a positive integer")
    # seconds between progress lines where stderr is not a terminal (a file, a scheduler)
    log_every_seconds: float = ranged(30.0, gt=0, text="a positive number of seconds")
    # the run stops when its running loss (the mean of up to log_every steps) grows past
    # this factor of its first step's loss (training/guards.py); null: only a NaN/inf stops it
    diverge_factor: float | None = ranged(1e4, gt=1, text="a factor > 1 or null")
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
    # deterministic algorithms and cuDNN settings: a GPU run repeats bit for bit (slower;
    # an op without a deterministic version stops the run, named)
    deterministic: bool = False
    # under torchrun: seconds a process waits for the others (to join, in a collective)
    # before it stops with an error naming the cause; torch's own default is 30 minutes
    dist_timeout: float = ranged(300.0, gt=0, text="a positive number of seconds")


# what each task (tasks/) reports: the one list its `metrics` and validate.py's check of
# train.monitor read; CLASS_WEIGHTED: the tasks whose loss task.class_weights weighs
TASK_METRICS = {"classification": ("loss", "acc", "balanced_acc", "macro_f1"),
                "localization": ("loss", "acc", "obj_acc", "cls_acc", "iou")}
CLASS_WEIGHTED = ("classification",)
SOFT_TARGETS = ("classification",)  # the tasks whose loss takes MixUp/CutMix's soft targets


@dataclass
class TaskConfig:
    """What is learned (tasks/__init__.py TASKS); loss to threshold are localization's."""

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
    # classification: each class's weight in the cross-entropy; auto: inverse class frequency
    # in the training split, n / (K × n_k) (the saved config holds the numbers); None: all 1
    class_weights: Literal["auto"] | list[float] | None = ranged(None, gt=0)


@dataclass
class Config:
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    out: str | None = None  # run directory; None: runs/<config file stem>
    source: str = field(default="<config>", compare=False)  # where it came from, for errors
