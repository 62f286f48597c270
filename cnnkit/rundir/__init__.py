"""The run directory: what `cnnkit train` writes in RUN/, by name, defined here once.

    RUN/config.yaml    the resolved config, written first (a run killed at once can resume)
    RUN/run.json       the manifest: what the run is and how it stands (lock.py)
    RUN/classes.json   class index -> name
    RUN/last.pt        the newest checkpoint; best.pt the best by train.monitor
    RUN/metrics.csv    one row per epoch (metrics.py, the one writer and the one reader)
    RUN/curves.png     the curves of metrics.csv, redrawn as it grows
    RUN/train.log      the log lines as printed (appended to on resume)
    RUN/load_report.txt  how model.weights matched, key by key

Modules: lock.py (the lock and run.json), metrics.py (metrics.csv), records.py (run
directories read back, for sweeps, `cnnkit runs` and `cnnkit plot`), early_stopping.py (the
verdict on a metrics history, which training and the readers of runs share). No torch is
imported here.
"""

CONFIG = "config.yaml"
MANIFEST = "run.json"
CLASSES = "classes.json"
LAST = "last.pt"
BEST = "best.pt"
METRICS = "metrics.csv"
CURVES = "curves.png"
LOG = "train.log"
LOAD_REPORT = "load_report.txt"
LOCK_RECORD = ".cnnkit.lock"  # the lock record, only where flock is missing
SWEEP = "sweep.json"  # a folder of runs that a sweep made (cnnkit.experiments.sweep)

# what training reads back or keeps (resume, the lock, the manifest): no other command writes
# over these in a run directory (`cnnkit export RUN --out RUN/last.pt` once made it
# unresumable). curves.png and load_report.txt are redrawn, best.pt is inference's.
TRAINING_NEEDS = (CONFIG, MANIFEST, CLASSES, LAST, BEST, METRICS, LOG, LOCK_RECORD)


def refuse_run_file(path, *, flag: str) -> None:
    """CnnkitError where `path` (an output a command was given) is a file training needs in
    a run directory (a folder with run.json or last.pt)."""
    from pathlib import Path

    from cnnkit.errors import CnnkitError

    path = Path(path)
    folder = path.parent
    if path.name in TRAINING_NEEDS and ((folder / MANIFEST).exists() or (folder / LAST).exists()):
        raise CnnkitError(f"{flag} {path}: {folder} is a run directory and training needs its "
                          f"{path.name}; write elsewhere")
