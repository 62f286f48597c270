"""One training run: what it holds, and its directory on disk (opening, resuming, saving).

A run directory holds config.yaml, classes.json, metrics.csv, curves.png, last.pt and best.pt;
last.pt is the truth a resume starts from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnkit.atomic import is_our_temp, remove_stale_temps
from cnnkit.checkpoint import (
    as_dtypes_of,
    load_checkpoint,
    restore_part,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cnnkit.config import config_from_dict, config_to_dict, resolve_paths
from cnnkit.data import Data
from cnnkit.data.preprocess import preprocessing_record, resolve_normalization
from cnnkit.errors import (
    CheckpointError,
    CnnkitError,
    ConfigError,
    RunPruned,
    TrainingStopped,
    counted,
)
from cnnkit.models.builder import Network
from cnnkit.rundir import BEST, LAST, MANIFEST, METRICS
from cnnkit.rundir.early_stopping import best_index
from cnnkit.rundir.lock import RunDirectory, lock_directory, read_manifest
from cnnkit.rundir.metrics import write_metrics
from cnnkit.runtime.speed import Speed
from cnnkit.schema import Config
from cnnkit.tasks import Task
from cnnkit.training.distributed import Cluster
from cnnkit.training.ema import EMA
from cnnkit.version import version


@dataclass
class RunState:
    """Where a run stands: what every save writes and a resume starts from."""

    epoch: int = 0  # epochs completed
    step: int = 0  # batches of the next epoch done at a mid-epoch save; 0 at an epoch's end
    totals: torch.Tensor | None = None  # their metric sums (task.stats), on the CPU
    history: list[dict[str, Any]] = field(default_factory=list)  # one metrics row per epoch
    best: float | None = None  # train.monitor's best value so far (None: no validation)
    best_epoch: int | None = None  # the epoch best.pt holds


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
    state: RunState
    speed: Speed
    cluster: Cluster
    quiet: bool = False
    log: Callable[..., None] = print  # training.log.RunLog: console and train.log
    rundir: RunDirectory | None = None  # rank 0: the lock and the manifest
    saved: tuple[int, int] | None = None  # (epoch, step) of the last checkpoint written


def open_run_dir(out: Path, cfg: Config, *, resume: bool, command: list[str],
                 say: Callable[[str], None] = print) -> tuple[RunDirectory, dict | None]:
    """Lock the run directory (created where missing), check that it may be trained into,
    remove a killed writer's temporaries and write the manifest; the checkpoint to resume
    from (None: start from scratch). Nothing is written into a folder that is refused."""
    if resume and not out.is_dir():
        raise CnnkitError(f"{out}: no run directory to resume")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    lock = lock_directory(out)
    try:
        checkpoint = _admit(out, cfg, resume=resume, say=say)
        remove_stale_temps(out)
        versions = {"cnnkit": version(), "torch": torch.__version__}
        return RunDirectory.start(out, lock, command=command, epochs=cfg.train.epochs,
                                  epoch=checkpoint["epoch"] if checkpoint else 0,
                                  versions=versions, fresh=checkpoint is None), checkpoint
    except BaseException:
        lock.close()
        raise


def close_after(rundir: RunDirectory, exc: BaseException, log: Callable[..., None]) -> None:
    """The manifest's last word on a run that did not finish, and its error in train.log."""
    if isinstance(exc, RunPruned):  # a search's pruner: its last epoch is saved, not resumed
        status, reason = "pruned", str(exc)
        log(f"cnnkit: {reason}", echo=False)
    elif isinstance(exc, (TrainingStopped, KeyboardInterrupt)):
        status, reason = "interrupted", str(exc) or "interrupted (Ctrl-C)"
        log(f"cnnkit: {reason}", echo=False)  # the CLI prints it, with the resume command
    else:
        status = "failed"
        reason = str(exc) if isinstance(exc, CnnkitError) else f"{type(exc).__name__}: {exc}"
        log(f"cnnkit: error: {reason}", echo=False)  # the CLI prints it
    try:
        rundir.close(status, reason.splitlines()[0] if reason else None)
    except CnnkitError:  # the disk that failed the run may fail this too; the lock is gone
        pass


def _admit(out: Path, cfg: Config, *, resume: bool, say: Callable[[str], None]) -> dict | None:
    """The checkpoint to resume from, or None; CnnkitError for a folder that is not ours."""
    is_run = (out / MANIFEST).exists()
    if is_run:
        try:
            read_manifest(out)  # ours: our format field and schema, not a file's name
        except CnnkitError as exc:
            raise CnnkitError(f"{exc}; {out} is not a cnnkit run directory, train into a new "
                              f"or empty folder (--out DIR)") from None
    has_run = (out / LAST).exists() or (out / METRICS).exists()  # older runs too
    if not is_run and not has_run and any(not _stale_temp(p) for p in out.iterdir()):
        raise CnnkitError(f"{out}: holds files but is not a cnnkit run directory (no "
                          f"{MANIFEST}); train into a new or empty folder (--out DIR)")
    if not resume:
        if has_run:
            raise CnnkitError(f"{out}: already holds a run; pass --resume to continue it, "
                              f"or --out DIR to train elsewhere")
        return None
    if not (out / LAST).exists():
        if not is_run:
            raise CnnkitError(f"{out}: holds no run to resume (no {MANIFEST}, no last.pt)")
        say(f"{out}: no checkpoint was written before the run stopped; starting it from "
            f"its config")
        return None
    checkpoint = load_checkpoint(out / LAST, for_resume=True)
    check_same_run(checkpoint["config"], cfg, out / LAST, done=checkpoint["epoch"])
    history = checkpoint["history"]
    if history and cfg.train.monitor not in history[0]:
        raise CheckpointError(f"{out / LAST}: malformed checkpoint: its history has no "
                              f"{cfg.train.monitor} column (train.monitor)")
    return checkpoint


def _stale_temp(path: Path) -> bool:
    return is_our_temp(path)


# keys that do not change what is learned, so a resumed run may set them anew (train.epochs
# within the rules of check_epochs)
RESUME_MAY_CHANGE = ("train.epochs", "train.lr", "train.log_every", "train.log_every_seconds",
                     "train.tensorboard", "train.checkpoint_every_steps", "train.device",
                     "train.diverge_factor", "train.accumulate_steps", "data.workers",
                     "train.dist_timeout",
                     "data.root")  # data moved: the same classes and counts (check_same_data)
# schedules laid out over the run's total number of steps: its length is part of the run
LENGTH_BOUND_SCHEDULES = ("cosine", "onecycle")


def check_same_run(saved: dict, cfg: Config, path: Path, *, done: int = 0) -> None:
    """Resume continues the same run: only keys that do not change what is learned may.
    Resolved values are compared with resolved values (a last.pt from before mean and std were
    resolved holds null there)."""
    now = config_to_dict(resolve_paths(resolve_normalization(cfg)))
    # a run saved before paths were stored absolute: its relative paths as from here
    saved = config_to_dict(resolve_paths(resolve_normalization(config_from_dict(
        saved, source=str(path)))))
    differ = [key for key in _flat_diff(saved, now) if key not in RESUME_MAY_CHANGE]
    if differ:
        raise ConfigError(f"{path}: the config differs from the run's at {', '.join(differ)}; "
                          f"resume continues the same run (only {', '.join(RESUME_MAY_CHANGE)} "
                          f"may change)")
    check_epochs(saved["train"]["epochs"], cfg, path, done=done)


def check_same_data(checkpoint: dict, data, path: Path) -> None:
    """Resume reads the data the run trained on, wherever data.root now points: the same
    classes, and the same number of examples in each split (where the checkpoint records
    them; a run saved before it recorded them is checked by its classes)."""
    sizes = {name: len(split) for name, split in data.splits.items()}
    saved = checkpoint.get("data_sizes") or sizes
    root = checkpoint["config"].get("data", {}).get("root")
    if list(checkpoint.get("classes") or data.classes) != list(data.classes) or saved != sizes:
        def show(classes, counts):
            return (f"{counted(len(classes), 'class', 'classes')} ({_names(classes)}), "
                    + ", ".join(f"{n:,} {split}" for split, n in counts.items()))
        raise ConfigError(f"{path}: data.root: the run trained on {root}, "
                          f"{show(checkpoint.get('classes') or [], saved)}; its data now has "
                          f"{show(data.classes, sizes)}; resume continues the same run: point "
                          f"data.root at the same data")


def _names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more"
                                       if len(names) > limit else "")


def check_epochs(planned: int, cfg: Config, path: Path, *, done: int) -> None:
    """train.epochs on resume: never fewer than were done; changed only where the schedule
    does not depend on the run's length."""
    epochs, schedule = cfg.train.epochs, cfg.train.schedule.name
    if epochs < done:
        raise ConfigError(f"{path}: train.epochs {epochs} is fewer than the {done} epochs this "
                          f"run has done; set train.epochs to {done} or more")
    if epochs != planned and schedule in LENGTH_BOUND_SCHEDULES:
        raise ConfigError(f"{path}: train.epochs: the {schedule} schedule lays its learning "
                          f"rate over all {planned} planned epochs, so the run cannot change to "
                          f"{epochs} (its rate would jump); train a new run instead")


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def restore(checkpoint: dict, model, optimizer, scheduler, *, ema: EMA | None = None,
            scaler: torch.amp.GradScaler | None = None, path: str | Path = LAST
            ) -> RunState:
    """Everything save wrote back into the run's objects; where the run stands. A part that
    does not fit (shapes, keys, types) is one CheckpointError naming `path` and the part."""
    as_dtypes_of(checkpoint["model"], model.state_dict(), path)  # an integer weight: refused
    restore_part(path, "model", lambda: model.load_state_dict(checkpoint["model"]))
    if ema is not None:
        if "ema" not in checkpoint:
            raise CheckpointError(f"{path}: holds no weight average (ema) to resume, though "
                                  f"train.ema_decay is on")
        restore_part(path, "weight average (ema)", lambda: ema.load_state_dict(checkpoint["ema"]))
    _check_optimizer(checkpoint["optimizer"], optimizer, path)
    restore_part(path, "optimizer state", lambda: optimizer.load_state_dict(
        checkpoint["optimizer"]))
    _check_fits(checkpoint["scheduler"], scheduler, path, "scheduler state")
    scheduler.load_state_dict(checkpoint["scheduler"])
    if scaler is not None and "scaler" in checkpoint:  # fp16: the loss scale reached
        _check_fits(checkpoint["scaler"], scaler, path, "loss scaler state")
        scaler.load_state_dict(checkpoint["scaler"])
    restore_part(path, "RNG state", lambda: set_rng_state(checkpoint["rng"]))
    history = list(checkpoint["history"])
    best_epoch = checkpoint["best_epoch"] if "best_epoch" in checkpoint \
        else _best_epoch(checkpoint, history)
    return RunState(epoch=checkpoint["epoch"], step=checkpoint.get("step", 0),
                    totals=checkpoint.get("totals"), history=history,
                    best=checkpoint.get("best"), best_epoch=best_epoch)


def set_lr(optimizer: torch.optim.Optimizer, scheduler, *, old: float, new: float) -> None:
    """A resumed run's new train.lr: every group's rate (lr_groups keep their ratios) and
    the schedule's base rates scaled by new / old, from the step reached on."""
    if new == old:
        return
    scale = new / old
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            if key in group:
                group[key] *= scale
    scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def _check_fits(saved: dict, owner, path: str | Path, what: str) -> None:
    """load_state_dict of schedulers and scalers copies whatever it is given; a wrong key or
    type would only fail steps later, deep in the loop."""
    differ = check_like(saved, owner.state_dict())
    if differ:
        raise CheckpointError(f"{path}: its {what} does not fit this run (at {differ})")


def _check_optimizer(saved: dict, optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    """Groups as this run's (keys, types, sizes) and each parameter's state shaped as the
    parameter: load_state_dict checks neither shapes nor types."""
    fresh = optimizer.state_dict()
    differ = check_like(saved["param_groups"], fresh["param_groups"], "param_groups")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entry in saved["state"].items():
        if differ:
            break
        if not isinstance(index, int) or not 0 <= index < len(params) \
                or not isinstance(entry, dict):
            differ = f"state[{index!r}]"
            continue
        differ = next((f"state[{index}].{k}" for k, v in entry.items()
                       if not (v is None or isinstance(v, torch.Tensor))  # SGD: buffer None
                       or v is not None and v.dim() > 0 and v.shape != params[index].shape), None)
    if differ:
        raise CheckpointError(f"{path}: its optimizer state does not fit this run (at {differ})")


def _best_epoch(checkpoint: dict, history: list[dict]) -> int | None:
    """For a last.pt written before best_epoch was saved: the epoch improves() last chose."""
    monitor = checkpoint["config"]["train"]["monitor"]
    at = best_index(history, monitor) if history and monitor in history[0] else None
    return None if at is None else history[at]["epoch"]


def save(run: Run, *, best: bool, metrics: bool = True) -> None:
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
        "epoch": state.epoch,
        "step": state.step,  # batches of the next epoch already done (mid-epoch saves)
        "totals": state.totals,  # their metric sums (task.stats), None at an epoch's end
        "rng": rng_state(),
        "history": state.history,
        "best": state.best,
        "best_epoch": state.best_epoch,
        "config": config_to_dict(run.cfg),
        "task": run.cfg.task.name,
        "classes": list(run.data.classes),
        "data_sizes": {name: len(split) for name, split in run.data.splits.items()},
        # what predict does to a new image, with the numbers the data used
        "preprocessing": preprocessing_record(run.cfg, mean=run.data.mean, std=run.data.std),
        "cnnkit_version": version(),
    }
    if run.ema is not None:
        checkpoint["ema"] = run.ema.state_dict()  # {"decay", "updates", "model": state_dict}
    if run.speed.scaler is not None:
        checkpoint["scaler"] = run.speed.scaler.state_dict()  # fp16: the loss scale reached
    if best:  # one serialization for both files
        save_checkpoint(out / BEST, checkpoint, out / LAST)
    else:
        save_checkpoint(out / LAST, checkpoint)
    run.saved = (state.epoch, state.step)
    if run.rundir is not None and not state.step:
        run.rundir.update(epoch=state.epoch)
    if metrics:
        write_metrics(out, state.history)


def check_like(saved: Any, fresh: Any, where: str = "") -> str | None:
    """Where `saved` differs in structure from `fresh` (the same object's state_dict now):
    its keys, value types and tensor shapes, list items pairwise; None where they agree."""
    if isinstance(fresh, dict):
        if not isinstance(saved, dict) or set(saved) != set(fresh):
            return where or "its keys"
        return next((d for k in fresh if (d := check_like(saved[k], fresh[k], f"{where}.{k}"
                                                          .lstrip(".")))), None)
    if isinstance(fresh, (list, tuple)):  # lengths may differ: unfreezing adds a group
        if not isinstance(saved, (list, tuple)):
            return where
        return next((d for i, (s, f) in enumerate(zip(saved, fresh))
                     if (d := check_like(s, f, f"{where}[{i}]"))), None)
    if isinstance(fresh, torch.Tensor):
        return None if isinstance(saved, torch.Tensor) and saved.shape == fresh.shape else where
    if _is_number(fresh):
        return None if _is_number(saved) else where
    if isinstance(fresh, (str, bool)):
        return None if type(saved) is type(fresh) else where
    return None  # None (set later, e.g. a scheduler's last value) or anything else: not judged


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
