"""Config fuzzing: whatever YAML document or `--set` value a user types, loading raises
nothing but ConfigError, and building the model nothing but a CnnkitError."""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnkit.config import config_from_dict, config_to_dict, load_config
from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.models.builder import build_model
from cnnkit.schema import Config
from tests.conftest import SMALL_CONV

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _key_paths(cls: type, prefix: str = "") -> list[str]:
    paths = []
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        path = f"{prefix}{f.name}"
        paths.append(path)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            paths += _key_paths(type(default), f"{path}.")
    return paths


KEY_PATHS = _key_paths(Config) + ["model.input", "model.layers", "model.weights"]
KEYS = st.sampled_from(sorted({p.split(".")[-1] for p in KEY_PATHS}) + ["model", "data"]) \
    | st.text(max_size=8)
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["adam", "sgd", "mnist-sample", "1e-3", ".nan", "auto", "cpu"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=16)


def _load_text(text: str, overrides: tuple[str, ...] = ()) -> Config | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return load_config(path, overrides)
        except ConfigError:
            return None


def _set(raw: dict, path: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node.get(part), dict) or \
            part not in node else node[part]
        if not isinstance(node, dict):
            return raw
    node[last] = value
    return raw


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_document(text):
    _load_text(text.replace("\x00", ""))


@SETTINGS
@given(VALUES)
def test_any_yaml_structure(document):
    _load_text(yaml.safe_dump(document))


def _numbers(node) -> list:
    if isinstance(node, dict):
        return [n for key, v in node.items() if key != "layers" for n in _numbers(v)]
    if isinstance(node, list):
        return [n for v in node for n in _numbers(v)]
    return [node] if isinstance(node, float) else []


@SETTINGS
@given(st.sampled_from(KEY_PATHS), VALUES)
def test_a_valid_config_with_one_value_replaced(path, value):
    """Either one line naming the file, or a config whose every number is finite."""
    try:
        cfg = config_from_dict(_set(SMALL_CONV, path, value), source="fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml: ") and "\n" not in str(exc)
        return
    assert all(math.isfinite(n) for n in _numbers(config_to_dict(cfg)))


@SETTINGS
@given(st.lists(st.sampled_from(KEY_PATHS) | st.text(max_size=10), max_size=3),
       st.lists(st.text(max_size=16) | st.sampled_from(["1e-3", "[1, 2]", "{a: 1}", "null",
                                                         "!!python/none", "'", "*x", "&a b"]),
                max_size=3))
def test_any_set_override(keys, values):
    items = tuple(f"{k}={v}" for k, v in zip(keys, values)) + tuple(values[len(keys):])
    _load_text(yaml.safe_dump(SMALL_CONV), items)


SMALL_INTS = st.integers(-3, 40)  # layer sizes stay small: the fuzz is about error types
LAYER_NAMES = st.sampled_from(["Conv2d", "Linear", "ReLU", "MaxPool2d", "BatchNorm2d",
                               "Flatten", "Dropout", "AvgPool2d", "AdaptiveAvgPool2d",
                               "Repeat", "BasicBlock", "Bottleneck", "BasicConv2d", "Inception",
                               "InceptionAux", "InputTransform", "Identity", "Softmax",
                               "LSTM", "Embedding", "Conv1d", "Upsample"]) | st.text(max_size=6)
ARGS = st.recursive(SMALL_INTS | st.floats(-2, 2) | st.none() | st.booleans()
                    | st.text(max_size=4), lambda inner: st.lists(inner, max_size=3),
                    max_leaves=4)
LAYER = st.tuples(LAYER_NAMES, st.lists(ARGS, max_size=4),
                  st.dictionaries(st.sampled_from(["stride", "padding", "bias", "kernel_size",
                                                   "in_channels", "out_features", "p"]),
                                  ARGS, max_size=2)).map(
    lambda t: [t[0], *t[1], *([t[2]] if t[2] else [])])


@pytest.mark.slow  # 200 random models built and run: ~2.5 s
@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(-1, 12), min_size=0, max_size=4),
       st.lists(LAYER, max_size=5) | st.dictionaries(st.text(max_size=5),
                                                     st.lists(LAYER, max_size=3), max_size=2))
def test_the_builder_raises_only_cnnkit_errors(shape, layers):
    raw = {"model": {"input": shape, "layers": layers}}
    try:
        build_model(config_from_dict(raw))
    except CnnkitError:
        pass
