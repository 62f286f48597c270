"""Errors that come from the user's input. The CLI prints their message on one line, exits 2."""


class CnnkitError(Exception):
    """Base class: a problem with a config, a data file, a checkpoint or a path."""


class ConfigError(CnnkitError):
    """A config key, type or value is wrong."""


class ShapeError(ConfigError):
    """A layer's written size disagrees with the shape that reaches it."""


class DataError(CnnkitError):
    """A dataset is missing, truncated or inconsistent."""


class CheckpointError(CnnkitError):
    """A checkpoint or weight file cannot be read or lacks what is asked of it."""


class DivergenceError(CnnkitError):
    """The training loss became NaN or infinite; nothing from that point on was saved."""


class RunPruned(Exception):
    """A search's pruner ended the trial after an epoch (its checkpoint saved): not an error;
    the run directory's manifest says `pruned`."""


class TrainingStopped(Exception):
    """SIGINT or SIGTERM stopped training after a checkpoint was saved (not an error: the CLI
    prints the resume command and exits 128 + the signal number, as shells do)."""

    def __init__(self, message: str, *, signum: int, checkpoint: str):
        super().__init__(message)
        self.signum = signum
        self.checkpoint = checkpoint


def display(text: str) -> str:
    """`text` safe to print anywhere: a path's undecodable bytes (surrogate escapes, as
    Python reads a non-UTF-8 file name) become U+FFFD instead of an UnicodeEncodeError."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 epoch`, `3 epochs`, `1,000 images`: a count with its noun in the right number."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
