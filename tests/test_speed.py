"""Precision, memory format and torch.compile settings on CPU: accepted, resolved to what
runs here, and falling back with a warning where they cannot."""

import pytest
import torch
from torch import nn

from cnnkit.checkpoint import load_checkpoint
from cnnkit.config import load_config
from cnnkit.errors import ConfigError
from cnnkit.runtime import speed as speed_mod
from cnnkit.runtime.speed import SpeedWarning, compile_model, resolve_speed
from cnnkit.training.trainer import train

CPU = torch.device("cpu")
CONV = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(10))
DENSE = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))


def test_auto_is_fp32_on_cpu_and_nhwc_only_for_conv_nets():
    conv = resolve_speed(CPU, precision="auto", channels_last="auto", model=CONV)
    assert (conv.precision, conv.channels_last, conv.scaler) == ("fp32", True, None)
    off = resolve_speed(CPU, precision="auto", channels_last=False, model=CONV)
    assert not off.channels_last
    dense = resolve_speed(CPU, precision="auto", channels_last=True, model=DENSE)
    assert not dense.channels_last  # NHWC means nothing without convolutions


def test_channels_last_batches_keep_values_and_shape():
    speed = resolve_speed(CPU, channels_last=True, model=CONV)
    x = torch.randn(2, 3, 5, 5)
    y = speed.inputs(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)


def test_explicit_bf16_and_fp16_run_on_cpu_with_a_scaler_for_fp16():
    assert resolve_speed(CPU, precision="bf16").precision == "bf16"
    fp16 = resolve_speed(CPU, precision="fp16")
    assert fp16.precision == "fp16" and fp16.scaler is not None


def test_unsupported_precision_falls_back_to_fp32_with_a_warning(monkeypatch):
    monkeypatch.setattr(speed_mod, "precision_works", lambda device, precision: False)
    with pytest.warns(SpeedWarning, match="bf16 autocast does not run on cpu; training in fp32"):
        speed = resolve_speed(CPU, precision="bf16")
    assert speed.precision == "fp32" and speed.scaler is None


def test_bad_values_are_config_errors(write_config):
    path = write_config()
    with pytest.raises(ConfigError, match="train.precision: expected one of auto, fp32, bf16, "
                                          "fp16, found 'fp8'"):
        load_config(path, ["train.precision=fp8"])
    with pytest.raises(ConfigError, match="train.channels_last: expected 'auto' or a boolean"):
        load_config(path, ["train.channels_last=sometimes"])
    with pytest.raises(ConfigError, match="train.compile: expected a boolean"):
        load_config(path, ["train.compile=fast"])
    assert load_config(path, ["train.channels_last=true"]).train.channels_last is True


def test_compile_failure_falls_back_to_eager_and_leaves_no_trace(monkeypatch):
    def broken(model):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(SpeedWarning, match=r"torch.compile failed \(RuntimeError: no C\+\+ "
                                          r"compiler found\); training eagerly"):
        result = compile_model(model, lambda m: m(torch.randn(4, 3)).sum().backward())
    assert result is model
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_compile_trial_restores_buffers_and_rng(monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model: model)  # a compile that works
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Dropout(0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    compile_model(model, lambda m: m(torch.randn(4, 3)).sum().backward())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_bf16_channels_last_training_learns_on_cpu(write_config, tmp_path):
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=("train.epochs=1", "train.precision=bf16",
                              "train.channels_last=true", "data.train_size=500",
                              "data.val_size=100", "train.batch_size=50"))
    assert result.history[0]["val_acc"] > 0.3
    weight = result.model.state_dict()["0.weight"]
    assert weight.dtype == torch.float32  # autocast: fp32 master weights
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_fp16_keeps_its_loss_scale_in_the_checkpoint_and_resumes(write_config, tmp_path):
    path = write_config()
    # fp16 convolutions are slow on CPU; the loss scale and the resume need few examples
    small = ("data.train_size=200", "data.val_size=100", "train.precision=fp16")
    train(path, out_dir=tmp_path / "run", quiet=True, overrides=("train.epochs=1", *small))
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt", for_resume=True)
    assert checkpoint["scaler"]["scale"] > 0
    resumed = train(path, out_dir=tmp_path / "run", quiet=True, resume=True,
                    overrides=("train.epochs=2", *small))
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_compile_setting_trains_even_where_compiling_fails(write_config, tmp_path,
                                                          monkeypatch):
    def broken(model):
        raise RuntimeError("inductor unavailable")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(SpeedWarning, match="training eagerly"):
        result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                       overrides=("train.epochs=1", "train.compile=true"))
    assert result.history[0]["val_acc"] > 0.3


@pytest.mark.slow
def test_real_compile_on_cpu_trains_or_falls_back(write_config, tmp_path, recwarn):
    """Slow however small the model: inductor generates and compiles C++ for the training and
    the evaluation graphs; a linear model takes about half the time of the conv net."""
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=("train.epochs=1", "train.compile=true",
                              "model.layers=[[Flatten], [Linear, 10]]"))
    assert result.history[0]["val_acc"] > 0.3
    assert all("training eagerly" in str(w.message) for w in recwarn
               if issubclass(w.category, SpeedWarning))
