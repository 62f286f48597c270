"""The CUDA paths: they skip on machines without a GPU and run on those with one."""

import pytest
import torch

from cnnkit.checkpoint import load_checkpoint
from cnnkit.data import build_data
from cnnkit.runtime.speed import resolve_speed
from cnnkit.schema import DataConfig
from cnnkit.tasks import Classification
from cnnkit.training.loop import Stepper, train_one_epoch
from cnnkit.training.trainer import train

pytestmark = pytest.mark.cuda  # skipped without a CUDA device (tests/conftest.py)
CUDA = torch.device("cuda")


def test_auto_picks_bf16_or_fp16_and_channels_last_on_cuda():
    speed = resolve_speed(CUDA, precision="auto", channels_last="auto")
    assert speed.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert speed.channels_last and torch.backends.cudnn.benchmark


def test_on_device_batches_equal_the_cpu_ones():
    data = build_data(DataConfig(train_size=500, val_size=100))
    cpu = data.loader("train", batch_size=64, shuffle=True, seed=1, device=torch.device("cpu"))
    gpu = data.loader("train", batch_size=64, shuffle=True, seed=1, device=CUDA)
    assert gpu.split.images.device.type == "cuda"
    for (xc, yc), (xg, yg) in zip(cpu.batches(3), gpu.batches(3), strict=True):
        assert torch.equal(yc, yg.cpu())
        torch.testing.assert_close(xc, xg.cpu())


def test_training_defaults_learn_on_cuda(write_config, tmp_path):
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=("train.epochs=2", "train.device=cuda"))
    assert result.history[-1]["val_acc"] > 0.8
    assert next(result.model.parameters()).dtype == torch.float32  # master weights


def test_fp16_saves_the_scaler(write_config, tmp_path):
    train(write_config(), out_dir=tmp_path / "run", quiet=True,
          overrides=("train.epochs=1", "train.device=cuda", "train.precision=fp16"))
    assert "scaler" in load_checkpoint(tmp_path / "run" / "last.pt")


def test_the_hot_loop_never_waits_for_the_gpu(write_config, tmp_path):
    """bf16 steps with metrics on the device: no host sync until the epoch's summary."""
    from cnnkit.config import load_config
    from cnnkit.runtime.assemble import assemble
    from cnnkit.runtime.speed import prepare_model
    from cnnkit.training.optim import build_optimizer, build_scheduler

    cfg = load_config(write_config(), ["train.device=cuda", "train.precision=bf16"])
    model, data, task = assemble(cfg, CUDA)
    speed = resolve_speed(CUDA, precision="bf16", channels_last=True, model=model)
    prepare_model(model, speed)
    optimizer = build_optimizer(model, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=10)
    loader = data.loader("train", batch_size=100, shuffle=True, seed=0, device=CUDA)
    train_one_epoch(Stepper(model, optimizer, scheduler, task, speed=speed), loader,
                    epoch=0)  # warm-up

    class Checked(Classification):
        def summarize(self, totals):
            torch.cuda.set_sync_debug_mode("default")  # the one sync the epoch is allowed
            return super().summarize(totals)

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_one_epoch(Stepper(model, optimizer, scheduler, Checked(), speed=speed), loader,
                        epoch=1)
        # the divergence watch's sums and micro-batches add no sync either (its window and
        # check come every log_every = 20 steps, past these 10)
        torch.cuda.set_sync_debug_mode("error")
        train_one_epoch(Stepper(model, optimizer, scheduler, Checked(), speed=speed,
                                diverge_factor=1e4, accumulate=2), loader, epoch=2)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.slow
def test_compile_on_cuda_trains(write_config, tmp_path):
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=("train.epochs=1", "train.device=cuda", "train.compile=true"))
    assert result.history[0]["val_acc"] > 0.3
