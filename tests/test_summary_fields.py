"""Receptive field and jump per layer in `cnnkit summary`, against values computed by hand.

The hand rule: a k×k layer of stride s adds (k - 1) × jump to the field and multiplies the
jump by s; layers that keep the grid (ReLU, Dropout, Flatten) repeat the values before them;
a Linear after Flatten mixes every unit, so it sees the whole input ("global").
"""

import json
from pathlib import Path

import pytest
import torch

from cnnkit.inspect.summary import format_summary, summarize
from cnnkit.models.builder import build_model
from tests.conftest import CONFIGS, ZOO

G = "global"


def _fields(config: str, meta_zoo=None) -> list[tuple[str, object, object]]:
    if Path(config).stem in ZOO:  # built once a session, on the meta device
        model = meta_zoo(Path(config).stem)
    else:
        with torch.device("meta"):  # the shapes and modules, without allocating weights
            model = build_model(CONFIGS / config)
    rows = summarize(model)["layers"]
    return [(row["name"], _square(row["receptive_field"]), _square(row["jump"])) for row in rows]


def _square(value):
    """5 for [5, 5]; the configs here have square kernels, so both axes agree."""
    if isinstance(value, list):
        assert len(value) == 2 and value[0] == value[1], value
        return value[0]
    return value


def test_course_model2():
    assert _fields("mnist_conv.yaml") == [
        ("0", 5, 1),  # Conv2d 5×5
        ("1", 5, 1),  # ReLU
        ("2", 6, 2),  # MaxPool2d 2: 5 + 1×1, jump 2
        ("3", 10, 2),  # Conv2d 3×3: 6 + 2×2
        ("4", 10, 2),
        ("5", 12, 4),  # MaxPool2d 2: 10 + 1×2, jump 4
        ("6", 12, 4),  # Flatten: each of the 400 features is one unit of the 16×5×5 map
        ("7", G, G),  # Linear: every logit sees all 400 units
    ]


def test_vgg19(meta_zoo):
    convs = {  # features.i: field after the conv at index i; each 3×3 conv adds 2 × jump
        0: (3, 1), 2: (5, 1),
        5: (10, 2), 7: (14, 2),
        10: (24, 4), 12: (32, 4), 14: (40, 4), 16: (48, 4),
        19: (68, 8), 21: (84, 8), 23: (100, 8), 25: (116, 8),
        28: (156, 16), 30: (188, 16), 32: (220, 16), 34: (252, 16),
    }  # fmt: skip
    pools = {4: (6, 2), 9: (16, 4), 18: (52, 8), 27: (124, 16), 36: (268, 32)}  # 2×2/2: + jump
    fields = {name: (rf, jump) for name, rf, jump in _fields("vgg19.yaml", meta_zoo)}
    for index, expected in {**convs, **pools}.items():
        assert fields[f"features.{index}"] == expected, index
        if index in convs:  # the ReLU after each conv repeats its values
            assert fields[f"features.{index + 1}"] == expected
    # AdaptiveAvgPool2d(7) on 7×7 maps is the identity; then Flatten; Linear is global.
    assert fields["avgpool"] == fields["flatten"] == (268, 32)
    assert all(fields[f"classifier.{i}"] == (G, G) for i in range(7))


def test_alexnet(meta_zoo):
    fields = _fields("alexnet.yaml", meta_zoo)
    assert [(rf, jump) for name, rf, jump in fields if name.startswith("features.")] == [
        (11, 4), (11, 4),  # conv 11×11/4, ReLU
        (19, 8),  # pool 3/2: 11 + 2×4
        (51, 8), (51, 8),  # conv 5×5: 19 + 4×8
        (67, 16),  # pool 3/2: 51 + 2×8
        (99, 16), (99, 16), (131, 16), (131, 16), (163, 16), (163, 16),  # conv 3×3: + 2×16
        (195, 32),  # pool 3/2: 163 + 2×16
    ]  # fmt: skip
    rest = {name: (rf, jump) for name, rf, jump in fields if not name.startswith("features.")}
    assert rest["avgpool"] == rest["flatten"] == rest["classifier.0"] == (195, 32)
    assert rest["classifier.1"] == rest["classifier.6"] == (G, G)


def test_googlenet_aux_heads_are_taps(meta_zoo):
    fields = {name: (rf, jump) for name, rf, jump in _fields("googlenet.yaml", meta_zoo)}
    assert fields["aux1"] == fields["aux2"] == (G, G)  # adaptive pool and Linear inside
    # The main path goes on from inception4a, not from aux1: 107 + 2×16 (one 3×3 stage).
    assert fields["inception4a"] == (107, 16)
    assert fields["inception4b"] == (139, 16)
    assert fields["inception4e"] == (235, 16)
    assert fields["avgpool"] == (G, G)  # global average pooling to 1×1


def test_uneven_kernels_report_both_axes(write_config):
    config = {"model": {"input": [1, 20, 30], "layers": [
        ["Conv2d", 1, 4, [3, 5], {"stride": [1, 2]}], ["ConvTranspose2d", 4, 4, 2], ["Flatten"],
    ]}}  # fmt: skip
    summary = summarize(build_model(write_config(config)))
    first, upsampled, flat = summary["layers"]
    assert (first["receptive_field"], first["jump"]) == ([3, 5], [1, 2])
    assert upsampled["receptive_field"] is None and flat["jump"] is None  # not modelled
    table = format_summary(summary)
    assert "3×5" in table.splitlines()[4] and "1×2" in table.splitlines()[4]


def test_flat_input_has_no_field(write_config):
    config = {"model": {"input": [784], "layers": [["Linear", 10]]}}
    (row,) = summarize(build_model(write_config(config)))["layers"]
    assert row["receptive_field"] is None and row["jump"] is None


@pytest.mark.parametrize("flag", [[], ["--json"]])
def test_cli_shows_the_columns(cli, flag):
    code, out, _ = cli("summary", CONFIGS / "mnist_conv.yaml", *flag)
    assert code == 0
    if flag:
        layers = json.loads(out)["layers"]
        assert layers[5]["receptive_field"] == [12, 12] and layers[5]["jump"] == [4, 4]
        assert layers[7]["receptive_field"] == G and layers[7]["jump"] == G
    else:
        header = next(line for line in out.splitlines() if line.startswith("Layer"))
        assert header.split()[-2:] == ["RF", "Jump"]
        row = next(line for line in out.splitlines() if line.startswith("5 "))
        assert row.split()[-2:] == ["12", "4"]
