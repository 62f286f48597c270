"""From the `model` section of a config to an `nn.Module`, shapes checked layer by layer.

Each layer is first built on the meta device (no memory), then fed one example of zeros of
the incoming shape, so a shape mismatch is named by its layer path. A small layer (up to
PROBE_ON_DEVICE parameters) is fed for real, on the device models are built on, by the module
that is kept: torch's meta kernels cost about 1.1 s on their first use in a process, which
is most of a small model's start-up. A large one is fed on the meta device, before any of its
weights is allocated.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from cnnkit.config import resolve_config
from cnnkit.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.geometry.sliding import window_output
from cnnkit.models.blocks import AuxHead
from cnnkit.models.init import apply_init
from cnnkit.models.layers import INFERRED, REPEAT, lookup
from cnnkit.schema import Config
from cnnkit.validate import declared_classes

Shape = tuple[int, ...]  # one example: (C, H, W) or (F,)
PROBE_ON_DEVICE = 1_000_000  # parameters; a layer with more is probed on the meta device


@dataclass(frozen=True)
class LayerInfo:
    name: str  # module path, as in the state_dict
    type: str
    output_shape: Shape


class NetworkOutput(NamedTuple):
    """What a Network with auxiliary heads returns in training mode."""

    logits: torch.Tensor  # (B, K)
    aux: tuple[torch.Tensor, ...]  # one (B, K) per auxiliary head


class Network(nn.Sequential):
    """The top-level model: children run in order. An `AuxHead` child is a tap: in training
    its output is collected and the main tensor passes it unchanged; in eval it is skipped."""

    def __init__(self, children: OrderedDict, *, input_shape: Shape, output_shape: Shape,
                 layers: list[LayerInfo]):
        super().__init__(children)
        self.input_shape = input_shape  # one example, as declared in model.input
        self.output_shape = output_shape  # one example, e.g. (10,) for ten logits
        self.layers_info = layers  # every layer of the config, in order, with its output shape
        self.frozen_norms: list[nn.Module] = []  # set by cnnkit.models.freeze: kept in eval mode

    def train(self, mode: bool = True) -> Network:
        """As nn.Module.train, except that frozen norm layers keep their running statistics."""
        super().train(mode)
        for module in self.frozen_norms:
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | NetworkOutput:
        aux = []
        for module in self:
            if isinstance(module, AuxHead):
                if self.training:
                    aux.append(module(x))
                continue
            x = module(x)
        return NetworkOutput(x, tuple(aux)) if aux else x


def build_model(config: Config | str | Path, *, overrides: tuple[str, ...] = ()) -> Network:
    """Build the model a config (or a config file) describes, with `overrides` applied."""
    return build_network(resolve_config(config, overrides))


def build_network(cfg: Config) -> Network:
    """The model of a config already checked (load_config, validate): what train and eval
    build from the config they parsed once."""
    builder = _Builder(source=cfg.source, aux_heads=cfg.model.aux_heads,
                       num_classes=declared_classes(cfg))
    shape: Shape = tuple(cfg.model.input)  # 1 to 3 positive sizes, as validate.py checks
    children, out = builder.named_children(cfg.model.layers, "", shape, top=True)
    model = Network(children, input_shape=shape, output_shape=out, layers=builder.layers)
    apply_init(model, cfg.model.init)
    return model


def is_layer(spec: Any) -> bool:
    """A layer is `Name` or `[Name, *args, {kwargs}]`; anything else is a container."""
    return isinstance(spec, str) or (isinstance(spec, list) and bool(spec)
                                     and isinstance(spec[0], str))


def format_shape(shape: Shape) -> str:
    return "×".join(str(s) for s in shape)


NUM_CLASSES = "num_classes"  # in a layer's arguments: model.num_classes, resolved


class _Builder:
    def __init__(self, *, source: str, aux_heads: bool, num_classes: int | None = None):
        self.source = source
        self.aux_heads = aux_heads
        self.num_classes = num_classes
        self.layers: list[LayerInfo] = []

    def where(self, path: str) -> str:
        return f"{self.source}: model.layers{'.' + path if path else ''}"

    def named_children(self, spec: Any, path: str, shape: Shape, *, top: bool = False):
        """(OrderedDict of name -> module, output shape) for a list, mapping or one layer."""
        if is_layer(spec) and not _is_repeat(spec):
            spec = [spec]
        if isinstance(spec, list):
            items = [(str(i), s) for i, s in enumerate(self.expand(spec, path))]
        elif isinstance(spec, dict):
            items = [(str(k), v) for k, v in spec.items()]
        else:
            raise ConfigError(f"{self.where(path)}: expected a layer [Name, args...], a list of "
                              f"layers or a mapping of named layers, found {spec!r}")
        if not items:
            raise ConfigError(f"{self.where(path)}: empty list of layers")
        children = OrderedDict()
        for name, child in items:
            child_path = f"{path}.{name}" if path else name
            module, shape = self.node(child, child_path, shape, top=top)
            if module is not None:
                children[name] = module
        return children, shape

    def node(self, spec: Any, path: str, shape: Shape, *, top: bool):
        if is_layer(spec) and not _is_repeat(spec):
            return self.layer(spec, path, shape, top=top)
        children, out = self.named_children(spec, path, shape)
        return nn.Sequential(children), out

    def expand(self, specs: list, path: str) -> list:
        out = []
        for i, spec in enumerate(specs):
            if not _is_repeat(spec):
                out.append(spec)
                continue
            if len(spec) != 3 or not isinstance(spec[1], int) or isinstance(spec[1], bool) \
                    or spec[1] < 1 or not is_layer(spec[2]):
                raise ConfigError(f"{self.where(f'{path}.{i}' if path else str(i))}: expected "
                                  f"[Repeat, N, LAYER] with N >= 1, found {spec!r}")
            out.extend([spec[2]] * spec[1])
        return out

    def layer(self, spec: str | list, path: str, shape: Shape, *, top: bool):
        spec = [spec] if isinstance(spec, str) else spec
        name = spec[0]
        where = f"{self.where(path)} ({name})"
        cls = lookup(name, where=self.where(path))
        if issubclass(cls, AuxHead):
            if not top:
                raise ConfigError(f"{where}: auxiliary heads are taps on the main path and "
                                  f"must be top-level entries of model.layers")
            if not self.aux_heads:
                return None, shape
        args, kwargs = self.classes_in(*_split_args(spec[1:]), where)
        args, kwargs = self.infer(cls, args, kwargs, shape, where)
        module, out_shape = self.probe(cls, args, kwargs, shape, where)
        self.layers.append(LayerInfo(path, name, out_shape))
        return module, (shape if issubclass(cls, AuxHead) else out_shape)

    def classes_in(self, args: list, kwargs: dict, where: str) -> tuple[list, dict]:
        """`num_classes` written as an argument is model.num_classes."""
        if NUM_CLASSES not in [*args, *kwargs.values()]:
            return args, kwargs
        if self.num_classes is None:
            raise ConfigError(f"{where}: refers to num_classes, but model.num_classes is null; "
                              f"set it to a number or auto")

        def put(a):
            return self.num_classes if a == NUM_CLASSES else a

        return [put(a) for a in args], {k: put(v) for k, v in kwargs.items()}

    def infer(self, cls: type, args: list, kwargs: dict, shape: Shape, where: str):
        """Fill or check the input size parameter (in_channels, in_features, ...)."""
        signature = _positional_params(cls)
        params = [p.name for p in signature]
        required = [p.name for p in signature
                    if p.default is inspect.Parameter.empty and p.name not in kwargs]
        for name, dim in INFERRED.items():
            if name not in params:
                continue
            actual = shape[dim]
            if name in kwargs:
                written = kwargs[name]
                if written is None:
                    kwargs[name] = written = actual
            elif name in required and len(args) == len(required) - 1:
                written = actual  # the short form: [Linear, 10], [Conv2d, 8, 5]
                args.insert(required.index(name), actual)
            elif len(args) > params.index(name):
                index = params.index(name)
                if args[index] is None:
                    args[index] = actual
                written = args[index]
            else:
                continue
            if written != actual:
                raise ShapeError(_size_mismatch(where, name, written, actual, shape))
        return args, kwargs

    def probe(self, cls: type, args: list, kwargs: dict, shape: Shape, where: str
              ) -> tuple[nn.Module, Shape]:
        """The layer, built where models are being built (the default device), and its output
        shape for one example: fed for real where it is small, on the meta device otherwise."""
        with torch.device("meta"):
            meta = _construct(cls, args, kwargs, where)
        small = sum(p.numel() for p in meta.parameters()) <= PROBE_ON_DEVICE
        on_meta = torch.get_default_device().type == "meta"
        module = _construct(cls, args, kwargs, where) if small or on_meta else None
        try:
            with torch.no_grad():
                y = self._forward(module if small else meta, cls, args, kwargs, shape, where)
        except (RuntimeError, ValueError, IndexError, TypeError, ArithmeticError,
                AssertionError) as exc:
            raise ShapeError(f"{where}: cannot take an input of shape {format_shape(shape)}: "
                             f"{_window_problem(meta, shape) or _first_line(exc)}") from None
        if not isinstance(y, torch.Tensor):
            raise ConfigError(f"{where}: returns {type(y).__name__}, not a tensor")
        if y.dim() < 2 or y.shape[0] != 1:
            raise ShapeError(f"{where}: output {tuple(y.shape)} lost the batch dimension")
        return module or _construct(cls, args, kwargs, where), tuple(y.shape[1:])

    @staticmethod
    def _forward(module: nn.Module, cls: type, args: list, kwargs: dict, shape: Shape,
                 where: str) -> Any:
        """One example of zeros through `module` in eval mode (it goes back to training mode):
        no running statistics move, no random draw is made."""
        device = next((t.device for t in [*module.parameters(), *module.buffers()]),
                      torch.get_default_device())
        try:
            return module.eval()(torch.zeros((1, *shape), device=device))
        except NotImplementedError:  # no meta kernel: run it for real, on the CPU
            with torch.device("cpu"):
                return _construct(cls, args, kwargs, where).eval()(torch.zeros((1, *shape)))
        finally:
            module.train()


def _is_repeat(spec: Any) -> bool:
    return isinstance(spec, list) and bool(spec) and spec[0] == REPEAT


def _split_args(items: list) -> tuple[list, dict]:
    """[*args, {kwargs}] -> (args, kwargs); YAML lists become tuples, as torch expects."""
    kwargs = {}
    if items and isinstance(items[-1], dict):
        kwargs = {str(k): _tuples(v) for k, v in items[-1].items()}
        items = items[:-1]
    return [_tuples(a) for a in items], kwargs


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _positional_params(cls: type) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in sig.parameters.values() if p.kind in kinds]


def _construct(cls: type, args: list, kwargs: dict, where: str) -> nn.Module:
    try:
        return cls(*args, **kwargs)
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        call = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()])
        raise ConfigError(f"{where}: cannot build {cls.__name__}({call}): "
                          f"{_first_line(exc)}") from None


def _size_mismatch(where: str, name: str, written: Any, actual: int, shape: Shape) -> str:
    hint = ""
    if name == "in_features" and len(shape) > 1:
        flat = 1
        for s in shape:
            flat *= s
        hint = f"; add [Flatten] before it for {flat} features"
    return (f"{where}: {name} is {written}, but the incoming tensor is "
            f"{format_shape(shape)} (so {name} = {actual}){hint}")


def _window_problem(module: nn.Module, shape: Shape) -> str | None:
    """For a conv or pooling layer, which axis is too small, by the output-size formula."""
    try:
        window_output(module, shape)
    except ValueError as exc:
        return str(exc)
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_val_crop(cfg: Config, model: Network) -> None:
    """data.val_crop other than the training size (FixRes): the model must take it and give
    the same outputs per example (global pooling before the head); built on the meta device."""
    crop = cfg.data.val_crop
    if crop is None or cfg.data.name != "imagefolder" or [crop, crop] == cfg.model.input[1:]:
        return
    shape = [cfg.model.input[0], crop, crop]
    try:
        with torch.device("meta"):
            evaluated = build_network(dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, input=shape)))
    except CnnkitError as exc:
        raise ConfigError(f"{cfg.source}: data.val_crop: the model cannot take "
                          f"{'×'.join(map(str, shape))} images ({exc})") from None
    if evaluated.output_shape != model.output_shape:
        raise ConfigError(f"{cfg.source}: data.val_crop: at {'×'.join(map(str, shape))} the model "
                          f"outputs {list(evaluated.output_shape)} per image, at model.input "
                          f"{list(model.output_shape)}")
