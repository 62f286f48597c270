"""Optional TensorBoard logging of the per-epoch metrics (`train.tensorboard: true`).

The tensorboard package is not a dependency of cnnkit: it is imported only when a config asks
for it, and its absence is one ConfigError line. Scalars are written once per epoch, the step
being the epoch number (1, 2, ...), into RUN_DIR/tensorboard/; view them with
`tensorboard --logdir RUN_DIR`.
"""

from __future__ import annotations

from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import ConfigError
from cnnkit.training.callbacks import Callback

if TYPE_CHECKING:
    from cnnkit.training.run import Run

SUBDIR = "tensorboard"
_SPLITS = ("train", "val", "test")


def scalar_tag(key: str) -> str:
    """A metrics row key as a TensorBoard tag: split metrics side by side under one section.

    >>> scalar_tag("val_acc"), scalar_tag("train_loss"), scalar_tag("lr")
    ('acc/val', 'loss/train', 'lr')
    """
    split, _, metric = key.partition("_")
    return f"{metric}/{split}" if split in _SPLITS and metric else key


class TensorBoardLogger(Callback):
    """Writes each epoch's metrics row as scalars.

    Made before the run loads anything, so a missing package fails first; the event file is
    opened at the first epoch's row. On resume, `first_epoch` is the epoch the run restarts
    after: events a crashed run logged past it are dropped (purge_step)."""

    def __init__(self, run_dir: str | Path, *, first_epoch: int = 0, source: str = "<config>"):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(f"{source}: train.tensorboard: true needs the tensorboard "
                              f"package, which is not installed (pip install tensorboard, "
                              f"or set train.tensorboard: false)") from None
        self._open = lambda: SummaryWriter(log_dir=str(Path(run_dir) / SUBDIR),
                                           purge_step=first_epoch + 1 if first_epoch else None)
        self.writer = None

    def on_epoch_end(self, run: Run, row: dict[str, Any]) -> None:
        if self.writer is None:
            self.writer = self._open()
        step = int(row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, Real) and not isinstance(value, bool):
                self.writer.add_scalar(scalar_tag(key), float(value), global_step=step)
        self.writer.flush()  # once an epoch: a crash loses at most the epoch in progress

    def on_fit_end(self, run: Run) -> None:
        if self.writer is not None:
            self.writer.close()
