"""The training loop: it owns the device, the run directory and the checkpoints.

The model does not know about the loop (Lightning's split); the loop meets the model, the data
and the task at `model(x)`, `loader.batches(epoch)` and `task.loss/stats/summarize`.
"""

from __future__ import annotations

import csv
import io
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
from cnnkit.atomic import atomic_write_text
from cnnkit.builder import Network, build_model
from cnnkit.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cnnkit.config import Config, config_to_dict, dump_config, load_config
from cnnkit.data import Data, build_data
from cnnkit.distributed import (
    Cluster,
    all_sum,
    check_batch,
    local_device,
    loss_weight,
    on_main,
    wrap,
)
from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.optim import build_optimizer, build_scheduler
from cnnkit.plotting import CurvePlotter
from cnnkit.speed import Speed, compile_model, prepare_model, resolve_speed
from cnnkit.tasks import Classification, main_logits


@dataclass
class RunResult:
    out_dir: Path
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)


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


def prepare(cfg: Config, device: torch.device) -> tuple[Network, Data, Classification]:
    """Model and data for a config, checked against each other before any step."""
    data = build_data(cfg.data, source=cfg.source)
    model = build_model(cfg)
    if tuple(model.input_shape) != tuple(data.input_shape):
        raise ConfigError(f"{cfg.source}: model.input: the model takes "
                          f"{list(model.input_shape)}, but {cfg.data.name} gives "
                          f"{list(data.input_shape)}")
    task = Classification(aux_weight=cfg.model.aux_weight)
    task.check(model.output_shape, len(data.classes), source=cfg.source)
    return model.to(device), data, task


def train(config: Config | str | Path, *, out_dir: str | Path | None = None,
          resume: bool = False, quiet: bool = False, overrides: tuple[str, ...] = ()) -> RunResult:
    """Train the model a config describes; write metrics, curves and checkpoints to the run dir."""
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    device = resolve_device(cfg.train.device)
    cluster = Cluster.from_env(device)  # one process unless started by torchrun
    try:
        return _train(cfg, out, local_device(device), cluster, resume=resume,
                      quiet=quiet or not cluster.is_main)
    finally:
        cluster.close()


def _train(cfg: Config, out: Path, device: torch.device, cluster: Cluster, *, resume: bool,
           quiet: bool) -> RunResult:
    check_batch(cfg.train.batch_size, cluster)
    checkpoint = on_main(lambda: _open_run_dir(out, cfg, resume=resume), cluster)
    seed_everything(cfg.train.seed)
    model, data, task = prepare(cfg, device)
    speed = resolve_speed(device, precision=cfg.train.precision,
                          channels_last=cfg.train.channels_last, model=model)
    prepare_model(model, speed)
    optimizer = build_optimizer(model, cfg.train)
    steps_per_epoch = -(-len(data.splits["train"]) // cfg.train.batch_size)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=steps_per_epoch)
    state = {"epoch": 0, "history": [], "best": None}
    if checkpoint is not None:
        state = _restore(checkpoint, model, optimizer, scheduler)
        if speed.scaler is not None and "scaler" in checkpoint:
            speed.scaler.load_state_dict(checkpoint["scaler"])
    plotter = None
    if cluster.is_main:
        atomic_write_text(out / "config.yaml", dump_config(cfg))
        plotter = CurvePlotter(out / "curves.png", title=Path(cfg.source).stem)
    try:
        _fit(cfg, out, model, data, task, optimizer, scheduler, state, plotter, quiet=quiet,
             speed=speed, cluster=cluster)
    finally:
        if plotter is not None:
            plotter.close()
    if not quiet:
        print(f"run saved in {out}/ (metrics.csv, curves.png, last.pt, best.pt)", flush=True)
    return RunResult(out, model, state["history"])


def _fit(cfg: Config, out: Path, model, data: Data, task, optimizer, scheduler, state: dict,
         plotter: CurvePlotter | None, *, quiet: bool, speed: Speed, cluster: Cluster) -> None:
    device = next(model.parameters()).device
    shard = {"rank": cluster.rank, "world_size": cluster.world_size}
    train_loader = data.loader("train", batch_size=cfg.train.batch_size, shuffle=True,
                               seed=cfg.train.seed, device=device, **shard)
    val_loader = data.loader("val", batch_size=cfg.train.batch_size, shuffle=False,
                             seed=cfg.train.seed, device=device, **shard)
    net = _step_model(cfg, model, train_loader, task, speed, cluster)
    for epoch in range(state["epoch"], cfg.train.epochs):
        train_metrics, seconds = train_one_epoch(net, train_loader, optimizer, scheduler, task,
                                                 epoch=epoch, quiet=quiet,
                                                 log_every=cfg.train.log_every, speed=speed,
                                                 cluster=cluster)
        val_metrics = evaluate(model, val_loader, task, speed=speed, cluster=cluster)
        row = {"epoch": epoch + 1, **_prefixed("train", train_metrics),
               **_prefixed("val", val_metrics), "lr": optimizer.param_groups[0]["lr"],
               "seconds": round(seconds, 4)}
        state["history"].append(row)
        state["epoch"] = epoch + 1
        improved = _improved(row, state["best"], cfg.train.monitor)
        if improved:
            state["best"] = row[cfg.train.monitor]
        if cluster.is_main:
            _save_epoch(out, cfg, data, model, optimizer, scheduler, state, best=improved,
                        scaler=speed.scaler)
            plotter.update(state["history"])
        if not quiet:
            print(_epoch_line(row, cfg.train.epochs), flush=True)


def _step_model(cfg: Config, model: nn.Module, loader, task: Classification, speed: Speed,
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
                    task: Classification, *, epoch: int, quiet: bool = True,
                    log_every: int = 20, speed: Speed | None = None,
                    cluster: Cluster | None = None) -> tuple[dict[str, float], float]:
    """One pass over the training split. Metrics add up on the device; the host reads them
    once per `log_every` steps for the progress bar and once at the end."""
    speed = speed or Speed.plain(next(model.parameters()).device)
    cluster = cluster or Cluster()
    model.train()
    totals = None
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}", leave=False, unit="batch",
               disable=quiet or not sys.stderr.isatty())
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader.batches(epoch)):
        with speed.autocast():
            output = model(speed.inputs(x))
            loss = task.loss(output, y)
        optimizer.zero_grad(set_to_none=True)
        if cluster.active:  # host arithmetic on known sizes, no sync
            weight = loss_weight(y.shape[0], loader.global_batch_size(step), cluster.world_size)
            speed.backward_step(loss * weight, optimizer)
        else:
            speed.backward_step(loss, optimizer)
        scheduler.step()
        batch = task.stats(main_logits(output).detach(), y, loss)
        totals = batch if totals is None else totals + batch
        bar.update(1)
        if not bar.disable and (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    metrics = task.summarize(all_sum(totals, cluster))  # syncs the device: honest time below
    seconds = time.perf_counter() - start
    bar.close()
    return metrics, seconds


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: Classification, *, speed: Speed | None = None,
             cluster: Cluster | None = None) -> dict[str, float]:
    speed = speed or Speed.plain(next(model.parameters()).device)
    model.eval()
    totals = None
    for x, y in loader.batches(0):
        with speed.autocast():
            logits = main_logits(model(speed.inputs(x)))
            batch = task.stats(logits, y, task.loss(logits, y))
        totals = batch if totals is None else totals + batch
    return task.summarize(all_sum(totals, cluster or Cluster()))


def _open_run_dir(out: Path, cfg: Config, *, resume: bool) -> dict | None:
    if resume:
        checkpoint = load_checkpoint(out / "last.pt", for_resume=True)
        _check_same_run(checkpoint["config"], cfg, out / "last.pt")
        return checkpoint
    if (out / "last.pt").exists() or (out / "metrics.csv").exists():
        raise CnnkitError(f"{out}: already holds a run; pass --resume to continue it, "
                          f"or --out DIR to train elsewhere")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    return None


def _check_same_run(saved: dict, cfg: Config, path: Path) -> None:
    """Resume continues the same run: only the epoch count may change."""
    now = config_to_dict(cfg)
    differ = [key for key in _flat_diff(saved, now) if key != "train.epochs"]
    if differ:
        raise ConfigError(f"{path}: the config differs from the run's at {', '.join(differ)}; "
                          f"resume continues the same run (only train.epochs may change)")


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _restore(checkpoint: dict, model, optimizer, scheduler) -> dict:
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    return {"epoch": checkpoint["epoch"], "history": list(checkpoint["history"]),
            "best": checkpoint.get("best")}


def _save_epoch(out: Path, cfg: Config, data: Data, model, optimizer, scheduler, state: dict,
                *, best: bool, scaler: torch.amp.GradScaler | None = None) -> None:
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state["epoch"],
        "rng": rng_state(),
        "history": state["history"],
        "best": state["best"],
        "config": config_to_dict(cfg),
        "classes": list(data.classes),
        "cnnkit_version": __version__,
    }
    if scaler is not None:
        checkpoint["scaler"] = scaler.state_dict()  # fp16: the loss scale it had reached
    atomic_write_text(out / "metrics.csv", _csv(state["history"]))
    save_checkpoint(out / "last.pt", checkpoint)
    if best:
        save_checkpoint(out / "best.pt", checkpoint)


def _csv(history: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _improved(row: dict, best: float | None, monitor: str) -> bool:
    if best is None:
        return True
    return row[monitor] < best if monitor.endswith("loss") else row[monitor] > best


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.4f}  {row['seconds']:.2f}s")
