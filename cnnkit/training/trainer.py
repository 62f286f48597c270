"""The training loop: it owns the device, the run directory and the checkpoints.

The model does not know about the loop (Lightning's split); the loop meets the model, the data
and the task at `model(x)`, `loader.batches(epoch)` and `task.loss/stats/summarize`.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.atomic import atomic_write_text
from cnnkit.config import Config, dump_config, load_config, validate
from cnnkit.data import Data, build_data
from cnnkit.data.augment import build_augment
from cnnkit.data.checks import check_splits
from cnnkit.data.shards import batches_per_epoch
from cnnkit.errors import ConfigError, TrainingStopped
from cnnkit.models.builder import Network, build_model
from cnnkit.models.freeze import freeze_for_training, unfreeze
from cnnkit.models.weights import load_pretrained, with_pretrained_defaults
from cnnkit.tasks import Task, build_task
from cnnkit.training.curves import CurvePlotter
from cnnkit.training.distributed import (
    Cluster,
    check_batch,
    on_main,
    wrap,
)
from cnnkit.training.early_stopping import best_index, improves, should_stop
from cnnkit.training.ema import build_ema
from cnnkit.training.loop import evaluate, train_one_epoch
from cnnkit.training.optim import build_optimizer, build_scheduler
from cnnkit.training.run import Run, metrics_csv, open_run_dir, restore, save
from cnnkit.training.signals import GracefulStop
from cnnkit.training.speed import Speed, compile_model, prepare_model, resolve_speed
from cnnkit.training.tensorboard import TensorBoardLogger


@dataclass
class RunResult:
    out_dir: Path
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    ema: nn.Module | None = None  # the weight average, where train.ema_decay is on


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: expected auto, cpu, cuda, cuda:N or mps, "
                          f"found {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name} asked for, but torch sees no CUDA device")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_out_dir(cfg: Config) -> Path:
    return Path(cfg.out) if cfg.out else Path("runs") / Path(cfg.source).stem


def prepare(cfg: Config, device: torch.device, *, model: Network | None = None
            ) -> tuple[Network, Data, Task]:
    """Model and data for a config, checked against each other before any step; `model`, when
    given, is the config's model already built (with a checkpoint's weights, say)."""
    data = build_data(cfg.data, source=cfg.source)
    task = build_task(cfg)
    check_splits(data.splits, num_classes=len(data.classes),
                 where=f"{cfg.source}: data ({cfg.data.name})", class_targets=task.class_targets)
    model = build_model(cfg) if model is None else model
    if model.input_shape[0] != data.input_shape[0]:
        raise ConfigError(f"{cfg.source}: model.input: the model's first layer takes "
                          f"{model.input_shape[0]} input channels, but {cfg.data.name}'s images "
                          f"have {data.input_shape[0]}")
    if tuple(model.input_shape) != tuple(data.input_shape):
        raise ConfigError(f"{cfg.source}: model.input: the model takes "
                          f"{list(model.input_shape)}, but {cfg.data.name} gives "
                          f"{list(data.input_shape)}")
    task.check(model.output_shape, len(data.classes), source=cfg.source)
    return model.to(device), data, task


def train(config: Config | str | Path, *, out_dir: str | Path | None = None,
          resume: bool = False, quiet: bool = False, overrides: tuple[str, ...] = ()) -> RunResult:
    """Train the model a config describes; write metrics, curves and checkpoints to the run dir."""
    cfg = validate(config) if isinstance(config, Config) else load_config(config, overrides)
    cfg = with_pretrained_defaults(cfg)
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    device = resolve_device(cfg.train.device)
    cluster = Cluster.from_env(device)  # one process unless started by torchrun
    try:
        return _train(cfg, out, cluster.device_for(device), cluster, resume=resume,
                      quiet=quiet or not cluster.is_main)
    finally:
        cluster.close()


def _train(cfg: Config, out: Path, device: torch.device, cluster: Cluster, *, resume: bool,
           quiet: bool) -> RunResult:
    check_batch(cfg.train.batch_size, cluster)
    checkpoint = on_main(lambda: open_run_dir(out, cfg, resume=resume), cluster)
    loggers = [TensorBoardLogger(out, first_epoch=checkpoint["epoch"] if checkpoint else 0,
                                 source=cfg.source)] \
        if cfg.train.tensorboard and cluster.is_main else []
    seed_everything(cfg.train.seed)
    model, data, task = prepare(cfg, device)
    if checkpoint is None and cfg.model.weights:
        _load_weights(out, cfg, model, data, quiet=quiet, write=cluster.is_main)
    freeze_for_training(model, cfg.train, source=cfg.source)
    speed = resolve_speed(device, precision=cfg.train.precision,
                          channels_last=cfg.train.channels_last, model=model)
    prepare_model(model, speed)  # before the optimizer and the EMA copy see the parameters
    optimizer = build_optimizer(model, cfg.train)
    # the train loader's length: under torchrun a last batch too small to split is left out
    steps_per_epoch = batches_per_epoch(len(data.splits["train"]), cfg.train.batch_size,
                                        cluster.world_size)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=steps_per_epoch)
    ema = build_ema(model, decay=cfg.train.ema_decay)
    # epoch: epochs completed; step, totals: batches done in the next one and their metric sums
    state = {"epoch": 0, "step": 0, "totals": None, "history": [], "best": None}
    if checkpoint is not None:
        # unfreezing happens at the start of epoch unfreeze_at, before its first step
        started = checkpoint["epoch"] + (1 if checkpoint.get("step") else 0)
        if cfg.train.unfreeze_at is not None and started >= cfg.train.unfreeze_at:
            unfreeze(model, optimizer, scheduler, cfg.train, source=cfg.source)
        state = restore(checkpoint, model, optimizer, scheduler, ema=ema, scaler=speed.scaler)
    run = Run(cfg, out, model, data, task, optimizer, scheduler, ema, state, speed, cluster,
              quiet=quiet)
    plotter = None
    if cluster.is_main:  # under torchrun only rank 0 writes
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        atomic_write_text(out / "classes.json", json.dumps(list(data.classes)))  # index -> name
        if state["history"]:  # last.pt is the truth; a kill may have come before metrics.csv
            atomic_write_text(out / "metrics.csv", metrics_csv(state["history"]))
        plotter = CurvePlotter(out / "curves.png", title=Path(cfg.source).stem)
    try:
        with GracefulStop() as stop:
            _fit(run, plotter, stop=stop, loggers=loggers)
    finally:
        if plotter is not None:
            plotter.close()
        for logger in loggers:
            logger.close()
    if not quiet:
        print(f"run saved in {out}/ (metrics.csv, curves.png, last.pt, best.pt)", flush=True)
    return RunResult(out, model, state["history"], ema.module if ema else None)


def _fit(run: Run, plotter: CurvePlotter | None, *, stop: GracefulStop,
         loggers: list = ()) -> None:
    cfg, model, state = run.cfg, run.model, run.state
    device = next(model.parameters()).device
    augment = build_augment(cfg.data.augment, mean=run.data.mean,
                            image_size=run.data.input_shape[1:], source=cfg.source)
    shard = {"rank": run.cluster.rank, "world_size": run.cluster.world_size}
    train_loader = run.data.loader("train", batch_size=cfg.train.batch_size, shuffle=True,
                                   seed=cfg.train.seed, device=device, augment=augment, **shard)
    val_loader = run.data.loader("val", batch_size=cfg.train.batch_size, shuffle=False,
                                 seed=cfg.train.seed, device=device, **shard)
    net = _step_model(cfg, model, train_loader, run.task, run.speed, run.cluster)
    hook = _StepHook(run, stop)
    for epoch in range(state["epoch"], cfg.train.epochs):
        if should_stop(state["history"], cfg.train.monitor, cfg.train.early_stopping):
            if not run.quiet:
                print(_stop_line(state["history"], cfg.train), flush=True)
            break
        if cfg.train.unfreeze_at == epoch + 1 and state["step"] == 0:
            joined = unfreeze(model, run.optimizer, run.scheduler, cfg.train, source=cfg.source)
            if not run.quiet:
                print(f"epoch {epoch + 1}: unfroze {joined:,} parameters", flush=True)
        totals = None if state["totals"] is None else state["totals"].to(device)
        train_metrics, seconds = train_one_epoch(
            net, train_loader, run.optimizer, run.scheduler, run.task, epoch=epoch,
            quiet=run.quiet, log_every=cfg.train.log_every, start=state["step"], totals=totals,
            grad_clip=cfg.train.grad_clip, hook=hook, ema=run.ema, speed=run.speed,
            cluster=run.cluster)
        # with an EMA, val_* score the average (best.pt, early stopping and eval follow it)
        # and raw_val_* the trained weights themselves
        scoring = {"speed": run.speed, "cluster": run.cluster}
        val_metrics = evaluate(run.ema.module if run.ema else model, val_loader, run.task,
                               **scoring)
        raw_metrics = _prefixed("raw_val", evaluate(model, val_loader, run.task, **scoring)) \
            if run.ema else {}
        row = {"epoch": epoch + 1, **_prefixed("train", train_metrics),
               **_prefixed("val", val_metrics), **raw_metrics,
               "lr": run.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 4)}
        state["history"].append(row)
        state.update(epoch=epoch + 1, step=0, totals=None)
        improved = improves(row[cfg.train.monitor], state["best"], cfg.train.monitor)
        if improved:
            state["best"] = row[cfg.train.monitor]
        save(run, best=improved)
        if plotter is not None:
            plotter.update(state["history"])
        for logger in loggers:
            logger.log_epoch(row)
        if not run.quiet:
            print(_epoch_line(row, cfg.train.epochs, run.task.metrics), flush=True)
        if stop.requested:
            raise hook.stopped()


def _step_model(cfg: Config, model: nn.Module, loader, task: Task, speed: Speed,
                cluster: Cluster) -> nn.Module:
    """What the training steps call: the model, wrapped in DDP under torchrun, compiled when
    `train.compile` is set (DDP first, then compile, as PyTorch recommends)."""
    net = wrap(model, cluster)
    if not cfg.train.compile:
        return net

    def trial(compiled: nn.Module) -> None:
        x, y = next(loader.batches(0))
        with speed.autocast():
            loss = task.loss(compiled(speed.inputs(x)), y)
        loss.backward()

    return compile_model(net, trial)


class _StepHook:
    """Between steps: save last.pt every `train.checkpoint_every_steps` steps, and save and
    stop when a signal asked for it."""

    def __init__(self, run: Run, stop: GracefulStop):
        self.run, self.stop, self.state = run, stop, run.state
        self.every = run.cfg.train.checkpoint_every_steps

    def due(self, epoch: int, done: int, steps_per_epoch: int) -> bool:
        """After `done` batches of `epoch`; the end of an epoch has its own save."""
        if done >= steps_per_epoch:
            return False
        step = epoch * steps_per_epoch + done  # optimizer steps since the start of the run
        return self.stop.requested or (self.every is not None and step % self.every == 0)

    def save(self, done: int, totals: torch.Tensor) -> None:
        self.state.update(step=done, totals=totals.detach().cpu())
        save(self.run, best=False, metrics=False)
        if self.stop.requested:
            raise self.stopped()

    def stopped(self) -> TrainingStopped:
        where = f"epoch {self.state['epoch'] + 1}, step {self.state['step']}" \
            if self.state["step"] else f"the end of epoch {self.state['epoch']}"
        path = self.run.out / "last.pt"
        return TrainingStopped(f"stopped by {self.stop.name} at {where}; saved {path}",
                               signum=self.stop.signum, checkpoint=str(path))


def _load_weights(out: Path, cfg: Config, model: nn.Module, data: Data, *, quiet: bool,
                  write: bool = True) -> None:
    """Pretrained weights in; the load report printed and kept as load_report.txt."""
    report = load_pretrained(model, cfg, classes=list(data.classes))
    if write:
        atomic_write_text(out / "load_report.txt", report.format(full=True) + "\n")
    if not quiet:
        print(report.format(), flush=True)


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _stop_line(history: list[dict], cfg) -> str:
    monitor = cfg.monitor
    best = history[best_index(history, monitor, min_delta=cfg.early_stopping.min_delta)]
    return (f"early stopping after epoch {history[-1]['epoch']}: {monitor} has not improved "
            f"for {cfg.early_stopping.patience} epochs (best {best[monitor]:.4f} at epoch "
            f"{best['epoch']})")


def _epoch_line(row: dict, epochs: int, metrics: tuple[str, ...] = ("loss", "acc")) -> str:
    """`epoch  3/30  train loss 0.1234 acc 0.9610  val loss ...`, over the task's metrics."""
    splits = [" ".join([split] + [f"{m} {row[f'{split}_{m}']:.4f}" for m in metrics])
              for split in ("train", "val")]
    return f"epoch {row['epoch']:>3}/{epochs}  {'  '.join(splits)}  {row['seconds']:.2f}s"
