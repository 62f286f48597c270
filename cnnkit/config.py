"""Configs: one YAML file plus `--set` overrides in, one checked, resolved `Config` out.

The schema is the dataclasses of `cnnkit.schema`: their type hints drive the coercion here,
then `validate.validate` checks ranges and cross-key rules. Every problem is a `ConfigError`
whose one-line message names the file, the full key path, what was expected and what was
found, with a close match where there is one.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from cnnkit.errors import ConfigError
from cnnkit.schema import Config
from cnnkit.userfiles import MAX_BYTES, check_size, open_regular, safe_yaml
from cnnkit.validate import validate

SECTIONS = ("model", "data", "train", "task", "out")
SHIPPED = Path(__file__).parent / "configs"  # the configs that ship with cnnkit


def shipped_configs() -> dict[str, Path]:
    """Name -> file of each config shipped in the package (`cnnkit configs` lists them)."""
    return {p.stem: p for p in sorted(SHIPPED.glob("*.yaml"))}


def config_path(name: str | Path) -> Path:
    """A config file on disk, else the shipped config of that name (`resnet18` or
    `resnet18.yaml`); a path on disk wins. A name found nowhere comes back as it is."""
    path = Path(name)
    if path.exists() or path.parent != Path("."):
        return path
    return shipped_configs().get(path.name.removesuffix(".yaml"), path)


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    """Read a YAML config (a file, or a shipped config by name), apply `KEY.PATH=VALUE`
    overrides, check it, return a Config."""
    path = config_path(path)
    raw = _as_it_ran(_read_yaml(path))  # before the overrides, which then stand as set
    for item in overrides:
        apply_override(raw, item, source=str(path))
    return config_from_dict(raw, source=str(path), saved=False)


def resolve_config(config: Config | str | Path, overrides: tuple[str, ...] = ()) -> Config:
    """A config file read, or a Config taken as it is, with `KEY.PATH=VALUE` overrides
    applied to either (checked again; the Config keeps its source for messages)."""
    if not isinstance(config, Config):
        return load_config(config, overrides)
    if not overrides:
        return validate(config)  # one made or changed in Python skipped load_config's check
    raw = config_to_dict(config)
    for item in overrides:
        apply_override(raw, item, source=config.source)
    return config_from_dict(raw, source=config.source)


def config_from_dict(raw: Any, *, source: str = "<config>", saved: bool = True) -> Config:
    """Check a plain dict (e.g. one stored in a checkpoint) against the schema: types, then
    ranges and cross-key rules (`validate.validate`). `saved`: it may be a config written by
    an older cnnkit, read as the run it describes (_as_it_ran)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with sections {list(SECTIONS)}, "
                          f"found {_describe(raw)}")
    check_size(raw, where=source)  # e.g. a checkpoint's config, shared parts from its pickle
    cfg = _build_dataclass(Config, _as_it_ran(raw) if saved else raw, "", source,
                           skip={"source"})
    cfg.source = source
    return validate(cfg)


# data.augment as cnnkit wrote it, every key resolved, into each run's config.yaml and
# checkpoint before class folders read it (issue 25, commit ff7b103): these keys, no others
AUGMENT_BEFORE_FOLDERS = {"translate", "rotate", "scale", "crop_padding", "elastic",
                          "elastic_sigma", "hflip", "cutout"}


def _as_it_ran(raw: dict) -> dict:
    """A class-folder config saved before data.augment applied to class folders, read as the
    run it describes: its `hflip: false` was the digits' default, which class folders ignored
    (they always flipped); read as false now it would resume without flips. Such a config is
    known by its augment section, exactly the keys of then, and no data.val_crop."""
    data = raw.get("data") if isinstance(raw, dict) else None
    augment = data.get("augment") if isinstance(data, dict) else None
    if not (isinstance(augment, dict) and set(augment) == AUGMENT_BEFORE_FOLDERS
            and data.get("name") == "imagefolder" and "val_crop" not in data
            and augment["hflip"] is False):
        return raw
    return {**raw, "data": {**data, "augment": {**augment, "hflip": True}}}


def config_to_dict(cfg: Config) -> dict:
    """The resolved config as plain data, as written into run directories and checkpoints."""
    data = dataclasses.asdict(cfg)
    data.pop("source")
    return data


def resolve_paths(cfg: Config) -> Config:
    """data.root, and model.weights where it names a file or folder, made absolute (against
    the working directory): a run's config.yaml and checkpoints then work from any folder.
    `cnnkit export` strips them again."""
    data, model = cfg.data, cfg.model
    if data.root:
        data = dataclasses.replace(data, root=os.path.abspath(data.root))
    if model.weights and not model.weights.startswith("torchvision:") \
            and Path(model.weights).exists():
        model = dataclasses.replace(model, weights=os.path.abspath(model.weights))
    return dataclasses.replace(cfg, data=data, model=model)


def dump_config(cfg: Config, *, drop: typing.Iterable[str] = ()) -> str:
    """The config as YAML; without the dotted keys in `drop` (--print-config leaves out the
    keys the config does not read, which load back as their defaults)."""
    raw = config_to_dict(cfg)
    for key in drop:
        section, _, name = key.rpartition(".")
        node = raw
        for part in section.split("."):
            node = node[part]
        node.pop(name, None)
    return yaml.safe_dump(raw, sort_keys=False, default_flow_style=None)


def unread_keys(cfg: Config) -> list[str]:
    """The keys of the data and train sections this config's dataset, optimizer and schedule
    do not read (the task section's: tasks.unread_task_keys)."""
    return [key for key, applies in APPLIES.items() if not applies(cfg)]


_LOCALIZATION = ("mnist-localization", "localization-csv")
_SPLIT = ("mnist-sample", "mnist")  # datasets carved into train and val (sizes, folds)
# key -> whether a config reads it; a key not listed always applies
APPLIES: dict[str, typing.Callable[[Config], bool]] = {
    "data.localization": lambda c: c.data.name in _LOCALIZATION,
    **{f"data.{k}": (lambda c: c.data.name == "imagefolder") for k in (
        "image_size", "workers", "skip_bad", "decode")},
    **{f"data.{k}": (lambda c: c.data.name in _SPLIT) for k in ("folds", "fold")},
    "data.download": lambda c: c.data.name == "mnist",
    **{f"train.{k}": (lambda c: c.train.optimizer == "sgd") for k in ("momentum", "nesterov")},
    "train.schedule.warmup_epochs": lambda c: c.train.schedule.name != "onecycle",
    "train.schedule.step_size": lambda c: c.train.schedule.name == "step",
    "train.schedule.milestones": lambda c: c.train.schedule.name == "multistep",
    "train.schedule.gamma": lambda c: c.train.schedule.name in ("step", "multistep"),
    "train.schedule.min_lr": lambda c: c.train.schedule.name == "cosine",
    **{f"train.schedule.{k}": (lambda c: c.train.schedule.name == "onecycle") for k in (
        "pct_start", "div_factor", "final_div_factor")},
}


def apply_override(raw: dict, item: str, *, source: str = "<config>") -> None:
    """Set `a.b.c=value` in a raw config dict; the value is read as one YAML scalar."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.lr=0.001")
    value = safe_yaml(text, where=f"--set {item!r}: value is not valid YAML",
                      source=f"--set {item!r}") if text.strip() else None
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
        with open_regular(path) as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        names = list(shipped_configs())
        close = difflib.get_close_matches(path.stem, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{path}: config file not found, nor a config shipped with cnnkit"
                          f"{hint} (`cnnkit configs` lists them)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: not a regular file; a config is a YAML file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ConfigError(f"{path}: cannot read config ({getattr(exc, 'strerror', '') or exc})"
                          ) from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: {os.path.getsize(path):,} bytes; a config is at most "
                          f"{MAX_BYTES:,} bytes (is this a config?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from None
    raw = safe_yaml(text, where=f"{path}: not valid YAML", source=str(path))
    return {} if raw is None else raw


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
    for choice in choices:
        if value == choice and type(value) is type(choice):  # True and 1.0 are not 1
            return choice
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
        try:
            return float(value)
        except OverflowError:  # beyond a double: left an int, refused as not a number
            return value
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


# a repr cut while it is built: a wrong value may be large (or, shared, huge written out)
_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 3, 4, 6, 50, 50


def _describe(value: Any) -> str:
    text = _REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"
