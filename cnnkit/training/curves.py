"""A run's training curves, curves.png (matplotlib, Agg), redrawn off the loop's thread. The
overlay of several runs (`cnnkit plot`) is cnnkit.experiments.plot."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.atomic import atomic_write
from cnnkit.errors import display

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs) -> Figure:
    """matplotlib's OO API (no pyplot state, safe off the main thread), imported on the first
    drawing: 0.3 s that a run which never draws mid-way does not pay at start-up."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Figure, path: str | Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


class CurvePlotter:
    """Redraws curves.png on a background thread, so the loop does not wait for a drawing
    (~0.15 s of Python, as long as an epoch of the course's conv net). Drawing still takes
    the CPU and the GIL from the loop, so `due()` spaces the drawings: at least `interval`
    seconds apart, and drawing at most `share` of the time. Only the newest history is drawn;
    `close()` draws the last one given and waits for it."""

    def __init__(self, path: str | Path, *, title: str = "", interval: float = 5.0,
                 share: float = 0.05):
        self.path, self.title = Path(path), title
        self.interval, self.share = interval, share
        self._pending: list[dict] | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next = time.monotonic() + interval  # when a drawing is next due
        self._last: list[dict] | None = None  # the newest history offered, drawn or not

    def due(self) -> bool:
        return time.monotonic() >= self._next

    def offer(self, history: list[dict]) -> None:
        """`update(history)` where a drawing is due; else kept for `close()`."""
        self._last = list(history)
        if self.due():
            self.update(self._last)

    def update(self, history: list[dict]) -> None:
        with self._lock:
            self._pending = list(history)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain, daemon=True)
                self._thread.start()

    def _drain(self) -> None:
        while True:
            with self._lock:
                history, self._pending = self._pending, None
            if history is None:
                return
            started = time.monotonic()
            try:
                plot_curves(history, self.path, title=self.title)
            except BaseException as exc:  # re-raised on the main thread by close()
                self._error = exc
            spent = time.monotonic() - started
            self._next = time.monotonic() + max(self.interval, spent / self.share - spent)

    def close(self) -> None:
        if self._last is not None:
            self.update(self._last)
            self._last = None
        while self._thread is not None and self._thread.is_alive():
            self._thread.join()
            with self._lock:  # a history queued after the thread's last look
                if self._pending is not None:
                    self._thread = threading.Thread(target=self._drain, daemon=True)
                    self._thread.start()
        if self._error is not None:
            raise self._error


LABELS = dict(loss="loss", acc="accuracy", balanced_acc="balanced accuracy",
              macro_f1="macro-F1", obj_acc="objectness accuracy", cls_acc="class accuracy",
              iou="mean IoU")  # y-axis labels; others: the name


def metric_names(history: list[dict]) -> list[str]:
    """The task's metrics, in order: every NAME with a train_NAME column."""
    return [k[len("train_"):] for k in history[0] if k.startswith("train_")]


def plot_curves(history: list[dict], path: str | Path, *, title: str = "") -> None:
    """One panel per metric of the task (loss, accuracy, ...), train against validation
    where the run has a validation split."""
    epochs = [row["epoch"] for row in history]
    names = metric_names(history)
    fig = new_figure(figsize=(5 * len(names), 4))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, metric in zip(axes, names):
        for split, style in (("train", "--"), ("val", "-")):
            if f"{split}_{metric}" not in history[0]:
                continue
            ax.plot(epochs, [row[f"{split}_{metric}"] for row in history], style, marker="o",
                    markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(display(title))  # a non-UTF-8 file name: its odd bytes as U+FFFD
    save_figure(fig, path)
