"""Reliability, second ring, configs: a few hundred bytes cannot hang the loader or exhaust
memory (aliases counted written out, a FIFO not waited on), and what torch or the file system
would refuse after the run started is refused before anything is written."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cnnkit.config import _describe, load_config
from cnnkit.errors import ConfigError
from cnnkit.schema import SEEDS
from cnnkit.userfiles import MAX_NODES, check_size

LAYERS = "model: {input: [1, 28, 28], layers: [[Flatten], [Linear, 10]]}\n"


def _laughs(levels: int, indent: str, item: str) -> str:
    """A billion laughs, one level a line: level k holds 9 aliases of level k - 1, so the
    last holds 9**levels values written out. `item` starts each line ("- " or "k: ")."""
    lines = [f"{indent}{item.format(0)}&x0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    lines += [f"{indent}{item.format(k)}&x{k} [{', '.join([f'*x{k - 1}'] * 9)}]"
              for k in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["top", "layers", "typed"])
def test_an_alias_bomb_is_refused_at_once(cli, tmp_path, where):
    """Under 1 KB that is 9**9 values written out: once >60 s, in the loader (a wrong type's
    repr) or in the builder (the layer graph walked path by path)."""
    text = {"top": _laughs(9, "", "x{}: "),
            "layers": "model:\n  input: [1, 28, 28]\n  layers:\n" + _laughs(9, "    ", "- "),
            "typed": LAYERS + "train:\n  lr:\n" + _laughs(9, "    ", "x{}: ")}[where]
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    assert len(text) < 1000
    start = time.perf_counter()
    code, _, err = cli("summary", path)
    assert time.perf_counter() - start < 5
    assert code == 2 and err.count("\n") == 1, err
    assert f"more than {MAX_NODES:,} values with its aliases expanded" in err, err


def test_aliases_within_the_budget_still_load(tmp_path):
    """Aliases are not banned: a block anchored once and reused is a fair config."""
    path = tmp_path / "reuse.yaml"
    path.write_text("model:\n  input: [1, 28, 28]\n  layers:\n"
                    "    - &conv [Conv2d, 8, 3, {padding: 1}]\n    - [ReLU]\n    - *conv\n"
                    "    - [Flatten]\n    - [Linear, 10]\n")
    cfg = load_config(path)
    assert cfg.model.layers[2] == ["Conv2d", 8, 3, {"padding": 1}]


@pytest.mark.parametrize(("text", "message"), [
    ("model: &a [*a]\n", "a value contains itself (a recursive alias)"),
    ("model: &a {layers: *a}\n", "a value contains itself (a recursive alias)"),
    # each level nests 30 deep, under the parser's 100; aliased 4 times it is 120 deep
    ("a: &a " + "[" * 30 + "]" * 30 + "\n" + "".join(
        f"{b}: &{b} " + "[" * 29 + f"*{a}" + "]" * 29 + "\n"
        for a, b in zip("abc", "bcd")), "nested more than 100 levels deep (aliases expanded)"),
])
def test_recursive_and_deep_aliases(cli, tmp_path, text, message):
    path = tmp_path / "alias.yaml"
    path.write_text(text)
    code, _, err = cli("summary", path)
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_an_alias_bomb_in_a_set_value(write_config):
    levels = ["&x0 [ha, ha, ha, ha, ha, ha, ha, ha, ha]"] + [
        f"&x{k} [{', '.join([f'*x{k - 1}'] * 9)}]" for k in range(1, 9)]
    with pytest.raises(ConfigError, match=r"^--set 'train.lr=\[&x0 .*: more than 100,000"):
        load_config(write_config(), [f"train.lr=[{', '.join(levels)}]"])


def test_a_wrong_value_is_described_without_writing_it_out():
    """The repr is cut while it is built: 9**7 shared values, 14 characters each."""
    shared: list = ["ha"] * 9
    for _ in range(6):
        shared = [shared] * 9
    start = time.perf_counter()
    text = _describe(shared)
    assert time.perf_counter() - start < 0.1 and len(text) <= 70, text
    with pytest.raises(ConfigError, match="more than 100,000 values"):
        check_size({"train": {"lr": shared}}, where="ckpt.pt")


def test_a_fifo_named_as_the_config_does_not_block(cli, tmp_path):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)  # no writer: a plain open() waits forever
    code, _, err = cli("summary", fifo)
    assert code == 2 and f"{fifo}: not a regular file" in err


@pytest.mark.parametrize(("override", "message"), [
    ("train.seed=9223372036854775807", "train.seed: expected a seed from 0 to 4294967295"),
    (f"train.seed={SEEDS}", "train.seed: expected a seed from 0 to 4294967295"),
    ("train.seed=-1", "train.seed: expected a seed from 0 to 4294967295"),
    ("data.localization.seed=9223372036854775807", "data.localization.seed: expected a seed"),
    ('out="run\\0x"', "out: expected a path, found 'run\\x00x' (a NUL byte is in no file name)"),
    ('data.root="a\\0"', "data.root: expected a path"),
    ('model.weights="w\\0.pt"', "model.weights: expected a path"),
])
def test_refused_before_the_run_directory_is_made(cli, write_config, tmp_path, override,
                                                  message):
    path = _train_refused(cli, write_config(), tmp_path / "run", override, message)
    assert sorted(tmp_path.iterdir()) == [path]


def _train_refused(cli, path: Path, out: Path, override: str, message: str) -> Path:
    """`cnnkit train PATH --out OUT --set OVERRIDE` is one line holding `message`, exit 2, and
    OUT never made; the config's path back."""
    code, _, err = cli("train", path, "--out", out, "--set", override)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()
    return path


def test_the_largest_seed_trains(write_config, tmp_path):
    """SEEDS - 1 mixed with epochs and batches stays inside int64 (data/tensors, augment)."""
    from cnnkit.data.augment import batch_seed
    from cnnkit.data.tensors import epoch_permutation

    assert len(epoch_permutation(10, seed=SEEDS - 1, epoch=10_000)) == 10
    assert 0 <= batch_seed(SEEDS - 1, 10_000, 10**6) < 2**63
    assert load_config(write_config(), [f"train.seed={SEEDS - 1}"]).train.seed == SEEDS - 1


@pytest.mark.parametrize(("override", "message"), [
    ("model.layers.0=[Conv2d, 1, 8, 50]", "model.layers.0"),
    ("model.layers.7=[Linear, 999, 10]", "model.layers.7"),
    ("model.layers.0=[NoSuchLayer]", "NoSuchLayer"),
    ("train.freeze=[nosuch]", "train.freeze"),
    ("train.lr_groups=[{modules: [nosuch], lr: 0.1}]", "train.lr_groups.0.modules"),
    ("model.weights=/no/such/file.pt", "model.weights"),
])
def test_layer_and_key_errors_leave_no_run_directory(cli, write_config, tmp_path, override,
                                                     message):
    """These were one line, but after the run directory was made: a "failed" run left."""
    _train_refused(cli, write_config(), tmp_path / "run", override, message)
