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
from cnnkit.augment import build_augment
from cnnkit.builder import Network, build_model
from cnnkit.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cnnkit.config import Config, config_to_dict, dump_config, load_config
from cnnkit.data import Data, build_data
from cnnkit.ema import EMA, build_ema
from cnnkit.errors import CheckpointError, CnnkitError, ConfigError
from cnnkit.optim import build_optimizer, build_scheduler
from cnnkit.plotting import CurvePlotter
from cnnkit.stopping import should_stop
from cnnkit.tasks import Classification, main_logits


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


def prepare(cfg: Config, device: torch.device) -> tuple[Network, Data, Classification]:
    """Model and data for a config, checked against each other before any step."""
    data = build_data(cfg.data, source=cfg.source)
    model = build_model(cfg)
    if tuple(model.input_shape) != tuple(data.input_shape):
        raise ConfigError(f"{cfg.source}: model.input: the model takes "
                          f"{list(model.input_shape)}, but {cfg.data.name} gives "
                          f"{list(data.input_shape)}")
    task = Classification(aux_weight=cfg.model.aux_weight,
                          label_smoothing=cfg.train.label_smoothing)
    task.check(model.output_shape, len(data.classes), source=cfg.source)
    return model.to(device), data, task


def train(config: Config | str | Path, *, out_dir: str | Path | None = None,
          resume: bool = False, quiet: bool = False, overrides: tuple[str, ...] = ()) -> RunResult:
    """Train the model a config describes; write metrics, curves and checkpoints to the run dir."""
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    checkpoint = _open_run_dir(out, cfg, resume=resume)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    model, data, task = prepare(cfg, device)
    optimizer = build_optimizer(model, cfg.train)
    steps_per_epoch = -(-len(data.splits["train"]) // cfg.train.batch_size)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=steps_per_epoch)
    ema = build_ema(model, decay=cfg.train.ema_decay)
    state = {"epoch": 0, "history": [], "best": None}
    if checkpoint is not None:
        state = _restore(checkpoint, model, optimizer, scheduler, ema=ema)
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    plotter = CurvePlotter(out / "curves.png", title=Path(cfg.source).stem)
    try:
        _fit(cfg, out, model, data, task, optimizer, scheduler, state, plotter, quiet=quiet,
             ema=ema)
    finally:
        plotter.close()
    if not quiet:
        print(f"run saved in {out}/ (metrics.csv, curves.png, last.pt, best.pt)", flush=True)
    return RunResult(out, model, state["history"], ema.module if ema else None)


def _fit(cfg: Config, out: Path, model, data: Data, task, optimizer, scheduler, state: dict,
         plotter: CurvePlotter, *, quiet: bool, ema: EMA | None = None) -> None:
    device = next(model.parameters()).device
    augment = build_augment(cfg.data.augment, mean=data.mean, image_size=data.input_shape[1:],
                            source=cfg.source)
    train_loader = data.loader("train", batch_size=cfg.train.batch_size, shuffle=True,
                               seed=cfg.train.seed, device=device, augment=augment)
    val_loader = data.loader("val", batch_size=cfg.train.batch_size, shuffle=False,
                             seed=cfg.train.seed, device=device)
    for epoch in range(state["epoch"], cfg.train.epochs):
        if should_stop(state["history"], cfg.train.monitor, cfg.train.early_stopping):
            if not quiet:
                print(_stop_line(state["history"], cfg.train), flush=True)
            break
        train_metrics, seconds = train_one_epoch(model, train_loader, optimizer, scheduler, task,
                                                 epoch=epoch, quiet=quiet,
                                                 log_every=cfg.train.log_every, ema=ema)
        # with an EMA, val_* score the average (best.pt, early stopping and eval follow it)
        # and raw_val_* the trained weights themselves
        val_metrics = evaluate(ema.module if ema else model, val_loader, task)
        raw_metrics = _prefixed("raw_val", evaluate(model, val_loader, task)) if ema else {}
        row = {"epoch": epoch + 1, **_prefixed("train", train_metrics),
               **_prefixed("val", val_metrics), **raw_metrics,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 4)}
        state["history"].append(row)
        state["epoch"] = epoch + 1
        improved = _improved(row, state["best"], cfg.train.monitor)
        if improved:
            state["best"] = row[cfg.train.monitor]
        _save_epoch(out, cfg, data, model, optimizer, scheduler, state, best=improved, ema=ema)
        plotter.update(state["history"])
        if not quiet:
            print(_epoch_line(row, cfg.train.epochs), flush=True)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, scheduler,
                    task: Classification, *, epoch: int, quiet: bool = True,
                    log_every: int = 20, ema: EMA | None = None
                    ) -> tuple[dict[str, float], float]:
    """One pass over the training split. Metrics add up on the device; the host reads them
    once per `log_every` steps for the progress bar and once at the end."""
    model.train()
    totals = None
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}", leave=False, unit="batch",
               disable=quiet or not sys.stderr.isatty())
    start = time.perf_counter()
    for step, (x, y) in enumerate(loader.batches(epoch)):
        output = model(x)
        loss = task.loss(output, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)
        batch = task.stats(main_logits(output).detach(), y, loss)
        totals = batch if totals is None else totals + batch
        bar.update(1)
        if not bar.disable and (step + 1) % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    metrics = task.summarize(totals)  # syncs the device, so the time below is honest
    seconds = time.perf_counter() - start
    bar.close()
    return metrics, seconds


@torch.no_grad()
def evaluate(model: nn.Module, loader, task: Classification) -> dict[str, float]:
    model.eval()
    totals = None
    for x, y in loader.batches(0):
        logits = main_logits(model(x))
        batch = task.stats(logits, y, task.loss(logits, y, smooth=False))
        totals = batch if totals is None else totals + batch
    return task.summarize(totals)


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


def _restore(checkpoint: dict, model, optimizer, scheduler, *, ema: EMA | None = None) -> dict:
    model.load_state_dict(checkpoint["model"])
    if ema is not None:
        if "ema" not in checkpoint:
            raise CheckpointError("last.pt: holds no weight average (ema) to resume, though "
                                  "train.ema_decay is on")
        ema.load_state_dict(checkpoint["ema"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    set_rng_state(checkpoint["rng"])
    return {"epoch": checkpoint["epoch"], "history": list(checkpoint["history"]),
            "best": checkpoint.get("best")}


def _save_epoch(out: Path, cfg: Config, data: Data, model, optimizer, scheduler, state: dict,
                *, best: bool, ema: EMA | None = None) -> None:
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
    if ema is not None:
        checkpoint["ema"] = ema.state_dict()  # {"decay", "updates", "model": state_dict}
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


def _stop_line(history: list[dict], cfg) -> str:
    monitor = cfg.monitor
    pick = min if monitor.endswith("loss") else max
    best = pick(history, key=lambda row: row[monitor])
    return (f"early stopping after epoch {history[-1]['epoch']}: {monitor} has not improved "
            f"for {cfg.early_stopping.patience} epochs (best {best[monitor]:.4f} at epoch "
            f"{best['epoch']})")


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {row['train_acc']:.4f}  val loss {row['val_loss']:.4f} "
            f"acc {row['val_acc']:.4f}  {row['seconds']:.2f}s")
