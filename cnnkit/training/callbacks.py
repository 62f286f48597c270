"""What the training loop does between steps and epochs, as a list of callbacks.

The trainer builds the default list: `Checkpoints`, `Curves` (rank 0), the TensorBoard logger
(`train.tensorboard`, rank 0), the epoch line (unless quiet), then the callbacks passed to
`train(callbacks=...)`, then `SignalStop` last, so every other callback has seen an epoch
before a signal ends the run. Each hook is called in list order:

    on_step_end(run, step)   after each optimizer step (`step` is a loop.StepEnd)
    on_epoch_end(run, row)   after each epoch, once `run.state` holds its metrics row
    on_fit_end(run)          once, however fitting ended (last epoch, early stopping, a
                             signal or an error): release what the callback holds

On CUDA `on_step_end` runs between queued kernels: reading a tensor there (`.item()`,
`.cpu()`) makes the host wait for the device, so do it only when it is due.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import RunPruned, TrainingStopped
from cnnkit.rundir import LAST
from cnnkit.rundir.early_stopping import monitored
from cnnkit.training.curves import CurvePlotter
from cnnkit.training.fit import class_counts
from cnnkit.training.log import WIDTH, data_wait_hint, epoch_line, shown_metrics
from cnnkit.training.run import save
from cnnkit.training.signals import GracefulStop

if TYPE_CHECKING:
    from cnnkit.training.loop import StepEnd
    from cnnkit.training.run import Run


class Callback:
    """Override the hooks you need; each does nothing here."""

    def on_step_end(self, run: Run, step: StepEnd) -> None:
        pass

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        pass

    def on_fit_end(self, run: Run) -> None:
        pass


class Checkpoints(Callback):
    """last.pt every `every` optimizer steps mid-epoch, and at once when a signal asked to
    stop (then the stop); best.pt (where the epoch is the best), last.pt and metrics.csv at
    each epoch's end."""

    def __init__(self, *, every: int | None, stop: GracefulStop):
        self.every, self.stop = every, stop

    def on_step_end(self, run: Run, step: StepEnd) -> None:
        if step.done >= step.steps:  # the end of an epoch has its own save
            return
        at = step.epoch * step.steps + step.done  # optimizer steps since the start of the run
        if not self.stop.requested and (self.every is None or at % self.every):
            return
        step.watch.check()  # never save weights that a NaN has reached
        run.state.step, run.state.totals = step.done, step.totals.detach().cpu()
        save(run, best=False, metrics=False)
        if self.stop.requested:
            raise stopped(run, self.stop)

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        save(run, best=run.state.best_epoch == row["epoch"])


class Curves(Callback):
    """curves.png redrawn on a background thread after an epoch where a drawing is due (at
    least 5 s apart, at most 5% of the time: CurvePlotter), and after the last epoch."""

    def __init__(self, path: Path, *, title: str = ""):
        self.plotter = CurvePlotter(path, title=title)

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        self.plotter.offer(run.state.history)

    def on_fit_end(self, run: Run) -> None:
        self.plotter.close()


class SignalStop(Callback):
    """Ends the run after an epoch during which SIGINT or SIGTERM came (its save is done);
    within an epoch, `Checkpoints` saves and stops at the next step."""

    def __init__(self, stop: GracefulStop):
        self.stop = stop

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        if self.stop.requested:
            raise stopped(run, self.stop)


class Pruning(Callback):
    """Hands the monitored metric to a search after every epoch (its save is done); where
    the search says prune, the run ends with RunPruned and its manifest says `pruned`.
    `report(epoch, value) -> bool` is the search's (cnnkit/experiments/search.py)."""

    def __init__(self, report: Callable[[int, float], bool]):
        self.report = report

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        monitor = run.cfg.train.monitor
        value = monitored(row, monitor)
        if self.report(row["epoch"], value):
            raise RunPruned(f"pruned after epoch {row['epoch']}: {monitor} {value:.4f}")


def stopped(run: Run, stop: GracefulStop) -> TrainingStopped:
    state = run.state
    where = f"epoch {state.epoch + 1}, step {state.step}" if state.step \
        else f"the end of epoch {state.epoch}"
    path = run.out / LAST
    return TrainingStopped(f"stopped by {stop.name} at {where}; saved {path}",
                           signum=stop.signum, checkpoint=str(path))


UNEVEN = 1.5  # largest class / smallest above which the line shows the balanced metrics


class EpochLines(Callback):
    """The epoch line on rank 0 (the console's within 100 columns, train.log's with every
    metric), and the data-wait hint when the loader keeps the steps waiting (training/log.py
    data_wait_hint)."""

    def on_epoch_end(self, run: Run, row: dict) -> None:
        if not run.cluster.is_main:
            return
        counts = class_counts(run.data.splits["train"], len(run.data.classes))
        uneven = bool(counts) and max(counts) > UNEVEN * max(1, min(counts))
        line = {"images": len(run.data.splits["train"]),
                "best": run.state.best_epoch == row["epoch"]}
        shown = shown_metrics(run.task.metrics, uneven=uneven)
        run.log(epoch_line(row, run.cfg.train.epochs, shown, width=WIDTH, **line), file=False)
        run.log(epoch_line(row, run.cfg.train.epochs, run.task.metrics, **line), echo=False)
        hint = data_wait_hint(run.state.history, getattr(run.data, "workers", None))
        if hint:
            run.log(hint)
