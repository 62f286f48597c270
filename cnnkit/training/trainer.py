"""The training loop: it owns the device, the run directory and the checkpoints.

The model does not know about the loop (Lightning's split); the loop meets the model, the data
and the task at `model(x)`, `loader.batches(epoch)` and `task.loss/stats/summarize`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.atomic import atomic_write_text
from cnnkit.config import dump_config, resolve_config, resolve_paths
from cnnkit.data import Data, build_data
from cnnkit.data.augment import build_augment
from cnnkit.data.checks import check_training_device
from cnnkit.data.preprocess import resolve_normalization
from cnnkit.data.shards import batches_per_epoch
from cnnkit.errors import CheckpointError, CnnkitError, DivergenceError
from cnnkit.models.freeze import freeze_for_training, param_groups, unfreeze
from cnnkit.models.weights import load_pretrained, with_pretrained_defaults
from cnnkit.rundir import BEST, CLASSES, CONFIG, CURVES, LAST, LOAD_REPORT, LOG, MANIFEST, METRICS
from cnnkit.rundir.early_stopping import improves, should_stop
from cnnkit.rundir.lock import RunDirectory
from cnnkit.rundir.metrics import write_metrics
from cnnkit.runtime.assemble import assemble, resolve_device, seed_everything
from cnnkit.runtime.evaluate import evaluate
from cnnkit.runtime.speed import (
    Speed,
    compile_model,
    deterministic,
    prepare_model,
    resolve_speed,
)
from cnnkit.schema import Config, TrainConfig
from cnnkit.tasks import Task
from cnnkit.training.callbacks import Callback, Checkpoints, Curves, EpochLines, SignalStop
from cnnkit.training.distributed import (
    Cluster,
    all_sum,
    check_batch,
    on_main,
    wrap,
)
from cnnkit.training.ema import build_ema
from cnnkit.training.fit import fit_to_data
from cnnkit.training.log import RunLog, epoch_line, header_lines, oom_message
from cnnkit.training.loop import StepEnd, Stepper, train_one_epoch
from cnnkit.training.mixing import build_mix
from cnnkit.training.optim import build_optimizer, build_scheduler
from cnnkit.training.run import (
    Run,
    RunState,
    check_same_data,
    close_after,
    open_run_dir,
    restore,
    set_lr,
)
from cnnkit.training.signals import GracefulStop, signals_held
from cnnkit.training.tensorboard import TensorBoardLogger
from cnnkit.validate import check_packages


@dataclass
class RunResult:
    out_dir: Path
    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    ema: nn.Module | None = None  # the weight average, where train.ema_decay is on


def train(config: Config | str | Path, *, out_dir: str | Path | None = None,
          resume: bool = False, quiet: bool = False, overrides: tuple[str, ...] = (),
          callbacks: Sequence[Callback] = (), command: Sequence[str] = ()) -> RunResult:
    """Train the model a config describes; write metrics, curves and checkpoints to the run
    dir. `callbacks` see every step and epoch after the default ones (callbacks.py);
    `command` is what started it, for the manifest (the CLI passes its argv)."""
    # mean and std resolved to numbers: config.yaml and the checkpoints record what was used
    cfg = resolve_normalization(with_pretrained_defaults(resolve_config(config, overrides)))
    check_packages(cfg)  # before any data is read or folder made
    cfg = resolve_paths(cfg)  # config.yaml and the checkpoints: usable from any folder
    out = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    device = resolve_device(cfg.train.device)
    cluster = Cluster.from_env(device, timeout=cfg.train.dist_timeout)  # torchrun's, or one
    log = RunLog(quiet=quiet or not cluster.is_main)
    command = list(command) or ["cnnkit.train", str(cfg.source)]
    try:
        return _train(cfg, out, cluster.device_for(device), cluster, resume=resume, log=log,
                      callbacks=callbacks, command=command)
    finally:
        log.close()
        cluster.close()


def default_out_dir(cfg: Config) -> Path:
    """The run directory the config file sits in (RUN/config.yaml belongs to RUN, whatever
    its `out:` says), else the config's `out`, else runs/NAME."""
    source = Path(cfg.source)
    if source.name == CONFIG and (source.parent / MANIFEST).exists():
        return source.parent
    return Path(cfg.out) if cfg.out else Path("runs") / source.stem


def _train(cfg: Config, out: Path, device: torch.device, cluster: Cluster, *, resume: bool,
           log: RunLog, callbacks: Sequence[Callback], command: list[str]) -> RunResult:
    check_batch(cfg.train.batch_size, cluster)
    check_training_device(cfg.data.decode, device)  # before the data's files are indexed
    data = build_data(cfg.data, source=cfg.source)
    # the class count and input the data decides (model.num_classes: auto), and fit warnings
    cfg = fit_to_data(cfg, data, world_size=cluster.world_size, show=cluster.is_main)
    # a layer, shape, module path or weights error is one line before the run directory is
    # made; the initial weights are drawn from the seed as they always were
    seed_everything(cfg.train.seed)
    model, data, task = assemble(cfg, device, data=data)
    report = load_pretrained(model, cfg, classes=list(data.classes)) \
        if cfg.model.weights and not resume else None
    freeze_for_training(model, cfg.train, source=cfg.source)
    param_groups(model, cfg.train, source=cfg.source)  # train.lr_groups' module paths
    opened: list[RunDirectory] = []

    def open_dir() -> dict | None:  # rank 0 only: the others never touch the directory
        # run.json, then config.yaml at once: a Ctrl-C between them is held until both are
        # written, so that every run directory can be resumed
        with signals_held():
            rundir, checkpoint = open_run_dir(out, cfg, resume=resume, command=command,
                                              say=log)
            opened.append(rundir)
            atomic_write_text(out / CONFIG, dump_config(cfg))
        log.open(out / LOG)
        return checkpoint

    try:
        checkpoint = on_main(open_dir, cluster)
    except BaseException as exc:  # a signal held over the manifest's writing comes here
        if opened:
            close_after(opened[0], exc, log)
        raise
    rundir = opened[0] if opened else None
    try:
        if checkpoint is not None:  # data.root may have moved: the same data, checked
            check_same_data(checkpoint, data, out / LAST)
        result = _run(cfg, out, device, cluster, checkpoint, (model, data, task, report),
                      log=log, callbacks=callbacks, rundir=rundir)
    except BaseException as caught:
        exc = cluster.explain(caught)  # a lost peer: one line naming the cause
        if rundir is not None:
            close_after(rundir, exc, log)
        if exc is caught:
            raise
        raise exc from None
    if rundir is not None:
        rundir.close("finished")
    return result


def _run(cfg: Config, out: Path, device: torch.device, cluster: Cluster,
         checkpoint: dict | None, assembled: tuple, *, log: RunLog,
         callbacks: Sequence[Callback], rundir: RunDirectory | None) -> RunResult:
    model, data, task, report = assembled
    quiet = log.quiet
    loggers = [TensorBoardLogger(out, first_epoch=checkpoint["epoch"] if checkpoint else 0,
                                 source=cfg.source)] \
        if cfg.train.tensorboard and cluster.is_main else []  # first: a missing package fails
    if checkpoint is None and cfg.model.weights:
        _load_weights(out, cfg, model, data, log=log, write=cluster.is_main, report=report)
    speed = resolve_speed(device, precision=cfg.train.precision,
                          channels_last=cfg.train.channels_last, model=model)
    prepare_model(model, speed)  # before the optimizer and the EMA copy see the parameters
    optimizer = build_optimizer(model, cfg.train)
    # the train loader's length: under torchrun a last batch too small to split is left out
    steps_per_epoch = batches_per_epoch(len(data.splits["train"]), cfg.train.batch_size,
                                        cluster.world_size)
    scheduler = build_scheduler(optimizer, cfg.train, steps_per_epoch=steps_per_epoch)
    ema = build_ema(model, decay=cfg.train.ema_decay)
    state = RunState()
    if checkpoint is not None:
        # unfreezing happens at the start of epoch unfreeze_at, before its first step
        started = checkpoint["epoch"] + (1 if checkpoint.get("step") else 0)
        if cfg.train.unfreeze_at is not None and started >= cfg.train.unfreeze_at:
            unfreeze(model, optimizer, scheduler, cfg.train, source=cfg.source)
        state = restore(checkpoint, model, optimizer, scheduler, ema=ema, scaler=speed.scaler,
                        path=out / LAST)
        set_lr(optimizer, scheduler, old=checkpoint["config"]["train"]["lr"], new=cfg.train.lr)
        if state.step >= steps_per_epoch:  # an epoch of 0 batches would "train" and save
            raise CheckpointError(f"{out / LAST}: malformed checkpoint: 'step' {state.step} is "
                                  f"past the {steps_per_epoch} steps of an epoch of this run")
    run = Run(cfg, out, model, data, task, optimizer, scheduler, ema, state, speed, cluster,
              quiet=quiet, log=log, rundir=rundir)
    run.saved = (state.epoch, state.step) if checkpoint is not None else None
    for line in header_lines(run, steps_per_epoch):
        log(line)
    if cluster.is_main:  # under torchrun only rank 0 writes
        atomic_write_text(out / CLASSES, json.dumps(list(data.classes)))  # index -> name
        if state.history:  # last.pt is the truth; a kill may have come before metrics.csv
            write_metrics(out, state.history)
    with GracefulStop() as stop, deterministic(cfg.train.deterministic):
        # SignalStop last: every other callback sees an epoch before a signal ends the run
        try:
            _train_epochs(run, [*_default_callbacks(run, stop, loggers), *callbacks,
                                SignalStop(stop)])
        except DivergenceError as exc:
            raise DivergenceError(f"{exc}; {_resume_hint(run)}") from None
        except torch.OutOfMemoryError:
            raise CnnkitError(oom_message(cfg.train, device)) from None
    log(_saved_line(out, cfg.train.epochs))
    if state.best_epoch is not None:
        log(f"best.pt holds epoch {state.best_epoch}: {cfg.train.monitor} {state.best:.4f}")
    return RunResult(out, model, state.history, ema.module if ema else None)


def _resume_hint(run: Run) -> str:
    """Where the last checkpoint is, and how to go on from it with a lower rate."""
    lower = f"{run.cfg.train.lr / 10:g}"
    if run.saved is None:
        return f"no checkpoint was written; start again with a lower train.lr (e.g. {lower})"
    epoch, step = run.saved
    where = f"epoch {epoch + 1}, step {step}" if step else f"the end of epoch {epoch}"
    return (f"{run.out / LAST} (from {where}) is unchanged; resume from it with a lower "
            f"rate: cnnkit resume {run.out} --set train.lr={lower}")


def _default_callbacks(run: Run, stop: GracefulStop, loggers: list[Callback]
                       ) -> list[Callback]:
    """Checkpoints, then (rank 0) curves.png and TensorBoard, then the epoch line."""
    callbacks = [Checkpoints(every=run.cfg.train.checkpoint_every_steps, stop=stop)]
    if run.cluster.is_main:
        callbacks.append(Curves(run.out / CURVES, title=Path(run.cfg.source).stem))
    callbacks += loggers
    callbacks.append(EpochLines())
    return callbacks


def _train_epochs(run: Run, callbacks: list[Callback]) -> None:
    """The epochs, then each callback's on_fit_end, however they ended."""
    try:
        _epochs(run, callbacks)
    finally:
        for callback in callbacks:
            callback.on_fit_end(run)


def _epochs(run: Run, callbacks: list[Callback]) -> None:
    cfg, model, state = run.cfg, run.model, run.state
    device = next(model.parameters()).device
    augment = build_augment(cfg.data.augment, mean=run.data.mean)
    shard = {"rank": run.cluster.rank, "world_size": run.cluster.world_size}
    train_loader = run.data.loader("train", batch_size=cfg.train.batch_size, shuffle=True,
                                   seed=cfg.train.seed, device=device, augment=augment, **shard)
    # no validation split (data.val_size: 0): no val_* metrics; the schema then asks for a
    # train_* monitor and no early stopping
    val_loader = run.data.loader("val", batch_size=cfg.train.batch_size, shuffle=False,
                                 seed=cfg.train.seed, device=device, **shard) \
        if "val" in run.data.splits else None
    stepper = Stepper(_step_model(cfg, model, train_loader, run.task, run.speed, run.cluster),
                      run.optimizer, run.scheduler, run.task, speed=run.speed,
                      cluster=run.cluster, ema=run.ema, grad_clip=cfg.train.grad_clip,
                      log_every=cfg.train.log_every, quiet=run.quiet,
                      accumulate=cfg.train.accumulate_steps, log=run.log if
                      run.cluster.is_main else None,
                      log_every_seconds=cfg.train.log_every_seconds,
                      diverge_factor=cfg.train.diverge_factor,
                      mix=build_mix(cfg, num_classes=len(run.data.classes), cluster=run.cluster))

    def on_step(step: StepEnd) -> None:
        for callback in callbacks:
            callback.on_step_end(run, step)

    for epoch in range(state.epoch, cfg.train.epochs):
        if should_stop(state.history, cfg.train.monitor, cfg.train.early_stopping):
            run.log(_stop_line(state, cfg.train))
            break
        if cfg.train.unfreeze_at == epoch + 1 and state.step == 0:
            joined = unfreeze(model, run.optimizer, run.scheduler, cfg.train, source=cfg.source)
            run.log(f"epoch {epoch + 1}: unfroze {joined:,} parameters")
        totals = None if state.totals is None else state.totals.to(device)
        train_metrics, seconds = train_one_epoch(stepper, train_loader, epoch=epoch,
                                                 start=state.step, totals=totals,
                                                 on_step=on_step)
        row = {"epoch": epoch + 1, **_prefixed("train", train_metrics),
               **_validate(run, val_loader), "lr": run.optimizer.param_groups[0]["lr"],
               "seconds": round(seconds, 4), "data_wait": round(stepper.data_wait, 4)}
        _record(state, row, cfg.train.monitor)
        _note_skipped(run, {"train": train_loader, "val": val_loader})
        for callback in callbacks:
            callback.on_epoch_end(run, row)


def _note_skipped(run: Run, loaders: dict) -> None:
    """Per split, into run.json: the files data.skip_bad left out so far, and the images met
    so far that decode but may mislead, by kind (the loader has printed its lines). Counted
    as they are met: counting up front would cost a decode pass. The start header counts
    the files found."""
    if run.rundir is None:
        return
    found = {"skipped": {split: len(loader.bad) for split, loader in loaders.items()
                         if getattr(loader, "bad", None)},
             "odd_images": {split: {kind: len(paths) for kind, paths in loader.odd.items()}
                            for split, loader in loaders.items() if getattr(loader, "odd", None)}}
    changes = {key: value for key, value in found.items()
               if value and run.rundir.manifest.get(key) != value}
    if changes:
        run.rundir.update(**changes)


def _validate(run: Run, loader) -> dict[str, float]:
    """val_* metrics, and with an EMA raw_val_*: val_* then score the average (best.pt, early
    stopping and eval follow it) and raw_val_* the trained weights themselves."""
    if loader is None:
        return {}
    scoring = {"speed": run.speed, "reduce": lambda totals: all_sum(totals, run.cluster),
               "bar": not run.quiet and run.cluster.is_main}
    metrics = _prefixed("val", evaluate(run.ema.module if run.ema else run.model, loader,
                                        run.task, **scoring).metrics)
    if run.ema:
        metrics.update(_prefixed("raw_val", evaluate(run.model, loader, run.task,
                                                     **scoring).metrics))
    return metrics


def _record(state: RunState, row: dict, monitor: str) -> None:
    """An epoch's row into the state; best.pt's epoch moves where `monitor` improves. Without
    a validation split (data.val_size: 0) best.pt is the last epoch, and a val_* monitor
    reads its train_* column."""
    state.history.append(row)
    state.epoch, state.step, state.totals = row["epoch"], 0, None
    if not any(key.startswith("val_") for key in row):
        state.best, state.best_epoch = row["train_" + monitor.split("_", 1)[1]], row["epoch"]
    elif improves(row[monitor], state.best, monitor):
        state.best, state.best_epoch = row[monitor], row["epoch"]


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


def _load_weights(out: Path, cfg: Config, model: nn.Module, data: Data, *, log: RunLog,
                  write: bool = True, report=None) -> None:
    """Pretrained weights in (unless loaded already: `report`); the load report printed and
    kept as load_report.txt."""
    if report is None:  # a resumed run that had saved no checkpoint yet
        report = load_pretrained(model, cfg, classes=list(data.classes))
    if write:
        atomic_write_text(out / LOAD_REPORT, report.format(full=True) + "\n")
    log(report.format())


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def _stop_line(state: RunState, train: TrainConfig) -> str:
    """Patience counts improvements by more than min_delta; best.pt holds the best value
    (improves by any amount), which the line names."""
    stopping = train.early_stopping
    by = f" by more than {stopping.min_delta:g}" if stopping.min_delta else ""
    return (f"early stopping after epoch {state.epoch}: {train.monitor} has not improved{by} "
            f"for {stopping.patience} epochs (best {state.best:.4f} at epoch "
            f"{state.best_epoch})")


def _saved_line(out: Path, epochs: int) -> str:
    """The run files that exist: none where no epoch was trained (train.epochs: 0)."""
    files = [name for name in (METRICS, CURVES, LAST, BEST)
             if (out / name).exists()]
    if not files:
        return (f"nothing trained (train.epochs: {epochs}): {out}/ holds only config.yaml "
                f"and classes.json")
    return f"run saved in {out}/ ({', '.join(files)})"


_epoch_line = epoch_line  # its old name, which tests/test_localization_run.py reads
