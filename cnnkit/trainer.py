"""The training loop: it owns the device, the run directory and the checkpoints.

The model does not know about the loop (Lightning's split); the loop meets the model, the data
and the task at `model(x)`, `loader.batches(epoch)` and `task.loss/stats/summarize`.
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cnnkit import __version__
from cnnkit.atomic import atomic_write_text, remove_stale_temps
from cnnkit.augment import build_augment
from cnnkit.builder import Network, build_model
from cnnkit.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cnnkit.config import Config, config_to_dict, dump_config, load_config
from cnnkit.data import Data, build_data
from cnnkit.data.checks import check_splits
from cnnkit.distributed import (
    Cluster,
    all_sum,
    batches_per_epoch,
    check_batch,
    loss_weight,
    on_main,
    wrap,
)
from cnnkit.early_stopping import best_index, improves, should_stop
from cnnkit.ema import EMA, build_ema
from cnnkit.errors import CheckpointError, CnnkitError, ConfigError, TrainingStopped
from cnnkit.freeze import freeze_for_training, unfreeze
from cnnkit.guards import FiniteWatch, check_every_for, check_train_options, clip_gradients
from cnnkit.optim import build_optimizer, build_scheduler
from cnnkit.plotting import CurvePlotter
from cnnkit.speed import Speed, compile_model, prepare_model, resolve_speed
from cnnkit.stopping import GracefulStop
from cnnkit.tasks import Task, build_task, main_logits
from cnnkit.tensorboard_log import TensorBoardLogger
from cnnkit.weights import load_pretrained, with_pretrained_defaults


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
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    cfg = with_pretrained_defaults(cfg)
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    check_train_options(cfg.train, source=cfg.source)
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
    checkpoint = on_main(lambda: _open_run_dir(out, cfg, resume=resume), cluster)
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
        state = _restore(checkpoint, model, optimizer, scheduler, ema=ema, scaler=speed.scaler)
    run = Run(cfg, out, model, data, task, optimizer, scheduler, ema, state, speed, cluster,
              quiet=quiet)
    plotter = None
    if cluster.is_main:  # under torchrun only rank 0 writes
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        atomic_write_text(out / "classes.json", json.dumps(list(data.classes)))  # index -> name
        if state["history"]:  # last.pt is the truth; a kill may have come before metrics.csv
            atomic_write_text(out / "metrics.csv", _csv(state["history"]))
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


@dataclass
class Run:
    """What one training run holds, for the loop and the savers."""

    cfg: Config
    out: Path
    model: Network
    data: Data
    task: Task
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMA | None
    state: dict  # epoch, step, totals, history, best
    speed: Speed
    cluster: Cluster
    quiet: bool = False


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
        _save(run, best=improved)
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


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scheduler,
                    task: Task, *, epoch: int, quiet: bool = True,
                    log_every: int = 20, start: int = 0, totals: torch.Tensor | None = None,
                    grad_clip: float | None = None, hook: _StepHook | None = None,
                    ema: EMA | None = None, speed: Speed | None = None,
                    cluster: Cluster | None = None) -> tuple[dict[str, float], float]:
    """One pass over the training split, from batch `start` with the metric sums `totals` of
    the batches before it (mid-epoch resume). Metrics add up on the device; the host reads
    them once per `log_every` steps for the progress bar and once at the end."""
    device = next(model.parameters()).device
    speed = speed or Speed.plain(device)
    cluster = cluster or Cluster()
    model.train()
    watch = FiniteWatch(device, epoch=epoch, check_every=check_every_for(device, log_every))
    bar = tqdm(total=len(loader), initial=start, desc=f"epoch {epoch + 1}", leave=False,
               unit="batch", disable=quiet or not sys.stderr.isatty())
    begin = time.perf_counter()
    for step, (x, y) in enumerate(loader.batches(epoch, start=start), start=start):
        with speed.autocast():
            output = model(speed.inputs(x))
            loss = task.loss(output, y)
        watch.observe(loss, step)  # before the update: on the CPU a NaN never reaches weights
        optimizer.zero_grad(set_to_none=True)
        if cluster.active:  # DDP averages over ranks; weigh by shard size (host arithmetic)
            loss_to_step = loss * loss_weight(y.shape[0], loader.global_batch_size(step),
                                              cluster.world_size)
        else:
            loss_to_step = loss
        speed.backward_step(loss_to_step, optimizer,
                            before_step=lambda: clip_gradients(model.parameters(), grad_clip))
        scheduler.step()
        if ema is not None:
            ema.update(model)
        batch = task.stats(main_logits(output).detach(), y, loss)
        totals = batch if totals is None else totals + batch
        bar.update(1)
        if not bar.disable and (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if hook is not None and hook.due(epoch, step + 1, len(loader)):
            watch.check()  # never save weights that a NaN has reached
            hook.save(step + 1, totals)
    watch.check()
    if totals is None:
        raise CnnkitError(f"epoch {epoch + 1}: the training split gave no batches")
    metrics = task.summarize(all_sum(totals, cluster))  # syncs the device: honest time below
    seconds = time.perf_counter() - begin
    bar.close()
    return metrics, seconds


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: Task, *, speed: Speed | None = None,
             cluster: Cluster | None = None) -> dict[str, float]:
    speed = speed or Speed.plain(next(model.parameters()).device)
    model.eval()
    totals = None
    for x, y in loader.batches(0):
        with speed.autocast():
            logits = main_logits(model(speed.inputs(x)))
            batch = task.stats(logits, y, task.loss(logits, y, training=False))
        totals = batch if totals is None else totals + batch
    return task.summarize(all_sum(totals, cluster or Cluster()))


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
        _save(self.run, best=False, metrics=False)
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


def _open_run_dir(out: Path, cfg: Config, *, resume: bool) -> dict | None:
    if resume:
        checkpoint = load_checkpoint(out / "last.pt", for_resume=True)
        _check_same_run(checkpoint["config"], cfg, out / "last.pt")
        remove_stale_temps(out)
        return checkpoint
    if (out / "last.pt").exists() or (out / "metrics.csv").exists():
        raise CnnkitError(f"{out}: already holds a run; pass --resume to continue it, "
                          f"or --out DIR to train elsewhere")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    return None


# keys that do not change what is learned, so a resumed run may set them anew
RESUME_MAY_CHANGE = ("train.epochs", "train.log_every", "train.tensorboard",
                     "train.checkpoint_every_steps", "train.device", "data.workers")


def _check_same_run(saved: dict, cfg: Config, path: Path) -> None:
    """Resume continues the same run: only keys that do not change what is learned may."""
    now = config_to_dict(cfg)
    differ = [key for key in _flat_diff(saved, now) if key not in RESUME_MAY_CHANGE]
    if differ:
        raise ConfigError(f"{path}: the config differs from the run's at {', '.join(differ)}; "
                          f"resume continues the same run (only {', '.join(RESUME_MAY_CHANGE)} "
                          f"may change)")


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _restore(checkpoint: dict, model, optimizer, scheduler, *, ema: EMA | None = None,
             scaler: torch.amp.GradScaler | None = None) -> dict:
    """Everything _save wrote back into the run's objects; the loop state as a dict."""
    model.load_state_dict(checkpoint["model"])
    if ema is not None:
        if "ema" not in checkpoint:
            raise CheckpointError("last.pt: holds no weight average (ema) to resume, though "
                                  "train.ema_decay is on")
        ema.load_state_dict(checkpoint["ema"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and "scaler" in checkpoint:  # fp16: the loss scale reached
        scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    return {"epoch": checkpoint["epoch"], "step": checkpoint.get("step", 0),
            "totals": checkpoint.get("totals"), "history": list(checkpoint["history"]),
            "best": checkpoint.get("best")}


def _save(run: Run, *, best: bool, metrics: bool = True) -> None:
    """best.pt, then last.pt, then metrics.csv: a kill between two of them leaves last.pt at
    most one save behind best.pt, and resume rewrites metrics.csv from last.pt. Under
    torchrun only rank 0 writes."""
    if not run.cluster.is_main:
        return
    state, out = run.state, run.out
    checkpoint = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": state["epoch"],
        "step": state["step"],  # batches of the next epoch already done (mid-epoch saves)
        "totals": state["totals"],  # their metric sums (task.stats), None at an epoch's end
        "rng": rng_state(),
        "history": state["history"],
        "best": state["best"],
        "config": config_to_dict(run.cfg),
        "classes": list(run.data.classes),
        "mean": list(run.data.mean),  # the input normalization, for predicting on new images
        "std": list(run.data.std),
        "cnnkit_version": __version__,
    }
    if run.ema is not None:
        checkpoint["ema"] = run.ema.state_dict()  # {"decay", "updates", "model": state_dict}
    if run.speed.scaler is not None:
        checkpoint["scaler"] = run.speed.scaler.state_dict()  # fp16: the loss scale reached
    if best:  # one serialization for both files
        save_checkpoint(out / "best.pt", checkpoint, out / "last.pt")
    else:
        save_checkpoint(out / "last.pt", checkpoint)
    if metrics:
        atomic_write_text(out / "metrics.csv", _csv(state["history"]))


def _csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


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
