"""A search space from the command line: `--space KEY=KIND(ARGS)`, checked like `--set`.

    train.lr=loguniform(1.0e-4, 0.1)      a float, uniform in its logarithm (lo > 0)
    train.weight_decay=uniform(0, 0.1)    a float, uniform
    train.epochs=int(3, 10)               an integer, both ends included
    train.batch_size=choice(64, 128, 256) one of the values (YAML scalars)

Each end of a range and each choice goes through `load_config` on the config, with the
search's `--set` items, before any trial starts, so an unknown key, a wrong type or a value
out of range is one line naming the `--space` item. Sampling is Optuna's (`suggest_*`), so
the values a trial draws are stored with the study and come back on resume. No Optuna here:
`parse_space` and `check_space` run before Optuna is imported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnnkit.config import load_config
from cnnkit.errors import ConfigError
from cnnkit.experiments.sweep import override  # the one KEY=VALUE writer (grid sweeps')

KINDS = {"loguniform": 2, "uniform": 2, "int": 2, "choice": None}  # kind -> arguments
_ITEM = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([a-z]+)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Dim:
    """One searched key: its kind and its arguments (two ends, or the choices)."""

    key: str
    kind: str
    args: tuple[Any, ...]
    text: str  # as given, for errors and the study's record

    @property
    def probes(self) -> tuple[Any, ...]:
        """The values checked against the config: both ends, or every choice."""
        return self.args

    def sample(self, trial: Any) -> Any:
        """This key's value for an Optuna trial (the stored one where the trial has it)."""
        lo, hi = (self.args + (None, None))[:2]
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, lo, hi, log=True)
        if self.kind == "uniform":
            return trial.suggest_float(self.key, lo, hi)
        if self.kind == "int":
            return trial.suggest_int(self.key, lo, hi)
        return trial.suggest_categorical(self.key, list(self.args))


def parse_dim(item: str) -> Dim:
    """`train.lr=loguniform(1e-4, 0.1)` -> Dim; ConfigError naming the item otherwise."""
    match = _ITEM.match(item)
    if not match:
        raise ConfigError(f"--space {item!r}: expected KEY.PATH=KIND(ARGS) with KIND one of "
                          f"{', '.join(KINDS)}, e.g. train.lr=loguniform(1.0e-4, 0.1)")
    key, kind, text = match.groups()
    if kind not in KINDS:
        raise ConfigError(f"--space {item!r}: unknown kind {kind!r}; expected one of "
                          f"{', '.join(KINDS)}")
    try:
        args = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError:
        raise ConfigError(f"--space {item!r}: the arguments are not a list of values") from None
    want = KINDS[kind]
    if want is not None and len(args) != want:
        raise ConfigError(f"--space {item!r}: {kind} takes {want} values (low, high), "
                          f"found {len(args)}")
    if kind == "choice":
        return Dim(key, kind, _choices(item, args), item)
    lo, hi = (_number(item, kind, value) for value in args)
    if lo >= hi if kind != "int" else lo > hi:
        raise ConfigError(f"--space {item!r}: the low end {lo} must be below the high end {hi}")
    if kind == "loguniform" and lo <= 0:
        raise ConfigError(f"--space {item!r}: loguniform needs a low end above 0, found {lo}")
    return Dim(key, kind, (lo, hi), item)


def _number(item: str, kind: str, value: Any) -> float | int:
    """An end of a range; `1e-4` too (PyYAML reads it as a string)."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"--space {item!r}: {value!r} is not a finite number")
    if kind == "int":
        if number != int(number):
            raise ConfigError(f"--space {item!r}: int takes whole numbers, found {value!r}")
        return int(number)
    return number


def _choices(item: str, args: list[Any]) -> tuple[Any, ...]:
    if not args:
        raise ConfigError(f"--space {item!r}: choice needs at least one value")
    values = []
    for value in args:
        if isinstance(value, str):  # `1e-3` is a string to PyYAML; a number to the config
            try:
                value = float(value)
            except ValueError:
                pass
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise ConfigError(f"--space {item!r}: choice takes scalars (numbers, words, "
                              f"true/false, null), found {value!r}")
        values.append(value)
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"--space {item!r}: a value is given twice")
    return tuple(values)


def parse_space(items: list[str], *, sets: list[str] = ()) -> list[Dim]:
    """Every `--space` item parsed; a key given twice, or also by `--set`, is an error."""
    if not items:
        raise ConfigError("--search needs at least one --space KEY.PATH=KIND(ARGS), e.g. "
                          "--space 'train.lr=loguniform(1.0e-4, 0.1)'")
    dims: dict[str, Dim] = {}
    set_keys = {item.partition("=")[0].strip() for item in sets}
    for item in items:
        dim = parse_dim(item)
        if dim.key in dims:
            raise ConfigError(f"--space {dim.key}: given twice")
        if dim.key in set_keys:
            raise ConfigError(f"--space {dim.key}: also fixed by --set; give one of them")
        dims[dim.key] = dim
    return list(dims.values())


def check_space(config: str | Path, space: list[Dim], *, sets: list[str] = ()) -> None:
    """Each value alone on the config, then every key at its first value together: an
    unknown key, a wrong type or a range error is named by its `--space` item."""
    load_config(config, list(sets))
    for dim in space:
        for value in dim.probes:
            try:
                load_config(config, [*sets, override(dim.key, value)])
            except ConfigError as exc:
                raise ConfigError(f"--space {dim.text!r}: value {value!r}: {exc}") from None
    try:
        load_config(config, [*sets, *(override(d.key, d.probes[0]) for d in space)])
    except ConfigError as exc:
        raise ConfigError(f"--space: the first values together: {exc}") from None
