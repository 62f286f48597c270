"""Random and TPE searches on Optuna: `cnnkit sweep CONFIG --search tpe --trials N`.

    search = plan_search("mnist_conv", space=["train.lr=loguniform(1.0e-4, 0.1)"], trials=20,
                         method="tpe")
    run_search(search, "runs/lr_search")                     # DIR/study.journal
    run_search(search, "runs/lr_search", storage="postgresql+psycopg://u:p@db/optuna")

The study lives in Optuna's storage: a journal file DIR/study.journal (several processes on
one machine, or on a shared file system), or a database URL (several machines). Every process
runs the same command and claims trials until the study holds N; each trial is a run
directory DIR/trial-NNNN trained by `train()`, with its lock, manifest and exact resume.

The rules, across processes:

- **Exactly N.** A trial is claimed with `study.ask()`; the storage numbers trials 0, 1, 2...
  atomically (a database row, one journal log line under its lock), so the rule "a trial
  runs only if its number < N" holds across processes and machines. A process that draws
  a number >= N (two asked at once for the last one) tells that record FAIL at once with the
  user attribute `cnnkit_surplus`: never trained, no run directory, not one of the N.
- **A failed trial counts.** Its config and sampled values are its own; run again, they
  would fail again. It stays FAIL with its reason, and its manifest says `failed`.
- **After a kill, resume.** A SIGKILLed worker leaves its trial RUNNING in the storage and
  its run directory unlocked ("interrupted"). The next worker to start (or to finish a trial)
  resumes it from its own last.pt (exact resume), reports its remaining epochs to the pruner
  and tells the storage by number. Resuming keeps the values drawn and the epochs done;
  failing and replacing it would throw both away and draw a trial the sampler never chose
  in that order. A trial killed before its run directory was written is taken over only by
  a worker on the same host that sees the killer's process gone.
- **Pruning.** Optuna's median pruner (5 trials first, then a trial whose monitored value
  after an epoch is worse than the median of earlier trials at that epoch), fed after every
  epoch by `training.callbacks.Pruning`. A pruned run saves its epoch, releases its lock and
  its manifest says `pruned`.

A trial's value is its best monitored value (best.pt's), the direction from train.monitor.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.atomic import atomic_write_text
from cnnkit.config import config_to_dict, load_config
from cnnkit.errors import CnnkitError, ConfigError, RunPruned, TrainingStopped
from cnnkit.experiments.names import short_hash
from cnnkit.experiments.space import Dim, check_space, parse_space
from cnnkit.experiments.sweep import override
from cnnkit.rundir.early_stopping import best_value
from cnnkit.rundir.lock import RunDirectory, is_locked, lock_directory, read_manifest
from cnnkit.version import version

SEARCH_FILE = "search.json"  # what DIR holds: the search's command, storage and study
JOURNAL = "study.journal"
SURPLUS = "cnnkit_surplus"
METHODS = ("random", "tpe")
MAY_DIFFER = ("out", "data.root")  # where each machine keeps things, not what is searched
INSTALL = "pip install 'cnnkit[search]' (or: pip install optuna)"


@dataclass
class Search:
    config: Path
    space: list[Dim]
    sets: list[str]
    trials: int
    method: str
    monitor: str
    digest: str  # of the config with --set (but out, data.root): every worker's must agree

    @property
    def direction(self) -> str:
        return "minimize" if self.monitor.endswith("loss") else "maximize"

    def record(self) -> dict[str, Any]:
        """What every worker of the study must agree on (data.root may differ by machine)."""
        sets = [s for s in self.sets if s.partition("=")[0].strip() not in MAY_DIFFER]
        return {"space": [d.text for d in self.space], "sets": sets,
                "trials": self.trials, "monitor": self.monitor, "config_digest": self.digest}


def trial_dir(number: int) -> str:
    return f"trial-{number:04d}"


def plan_search(config: str | Path, *, space: list[str], sets: list[str] = (), trials: int,
                method: str) -> Search:
    """The search checked as `--set` is, before Optuna is imported or anything written."""
    if method not in METHODS:
        raise ConfigError(f"--search {method!r}: expected one of {', '.join(METHODS)}")
    if trials < 1:
        raise ConfigError(f"--trials {trials}: expected at least 1 trial")
    dims = parse_space(list(space), sets=list(sets))
    check_space(config, dims, sets=list(sets))
    cfg = load_config(config, list(sets))
    same = config_to_dict(cfg)  # what every worker must search; paths may differ by machine
    same.pop("out", None)
    same["data"].pop("root", None)  # MAY_DIFFER
    return Search(Path(config), dims, list(sets), trials, method, cfg.train.monitor,
                  short_hash(json.dumps(same, sort_keys=True, default=str)))


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise CnnkitError(f"--search needs Optuna, which is not installed: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def shown(url: str) -> str:
    """A storage URL fit to print: its password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: shown as given, minus any user part
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else url


def open_storage(out: Path, url: str | None):
    """DIR/study.journal, or the database at `url` (checked by connecting)."""
    optuna = import_optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(out / JOURNAL)))
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: expected a database URL, e.g. "
                          f"postgresql+psycopg://USER:PASSWORD@HOST/DB")
    engine = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": 10}  # seconds; psycopg's default waits
    try:
        return _racing(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine))
    except Exception as exc:  # refused, unknown host, bad password, no driver: one line
        raise CnnkitError(f"--storage {shown(url)}: cannot open the study's database "
                          f"({_one_line(exc)})") from None


def _racing(fn: Callable[[], Any], *, tries: int = 4) -> Any:
    """fn() again where another worker made the same thing at the same moment: two
    processes that create Optuna's tables (or the study, or its record) in a fresh database
    at once collide in PostgreSQL (a unique violation, "already exists"); the loser's second
    try finds them made. An unreachable server (OperationalError) is not retried."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(tries):
        try:
            return fn()
        except (IntegrityError, ProgrammingError):
            if attempt == tries - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def open_study(search: Search, storage, name: str, *, pruner=None):
    optuna = import_optuna()
    samplers = {"random": optuna.samplers.RandomSampler,
                "tpe": lambda: optuna.samplers.TPESampler(constant_liar=True)}

    def opened():  # constant_liar: running trials count as bad, so workers spread out
        study = optuna.create_study(
            storage=storage, study_name=name, direction=search.direction,
            sampler=samplers[search.method](), load_if_exists=True,
            pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5))
        if "cnnkit" not in study.user_attrs:
            study.set_user_attr("cnnkit", search.record())
        return study, study.user_attrs["cnnkit"]

    try:
        study, found = _racing(opened)
    except Exception as exc:
        raise CnnkitError(f"study {name}: cannot be opened ({_one_line(exc)})") from None
    if found != search.record():
        differ = [k for k in search.record() if found.get(k) != search.record()[k]]
        raise CnnkitError(f"study {name} was started with other {', '.join(differ)} "
                          f"({json.dumps({k: found.get(k) for k in differ})}); give this "
                          f"search another --study or --out")
    return study


def run_search(search: Search, out: str | Path, *, storage: str | None = None,
               study: str | None = None, log: Callable[[str], None] = print,
               pruner=None) -> list:
    """Claim and run trials until the study holds N (resuming killed ones); the study's
    N trials at the end, as Optuna's FrozenTrials."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"{out}: cannot create the search folder ({exc.strerror})") from None
    name = study or out.resolve().name
    the_study = open_study(search, open_storage(out, storage), name, pruner=pruner)
    atomic_write_text(out / SEARCH_FILE, json.dumps(
        {"format": 1, "config": str(search.config), "method": search.method, "study": name,
         "storage": shown(storage) if storage else JOURNAL, **search.record()}, indent=1) + "\n")
    where = shown(storage) if storage else str(out / JOURNAL)
    log(f"search: {search.method}, {search.trials} trials of {search.config} in {out}/, "
        f"study {name} in {where}")
    worker = Worker(the_study, search, out, log)
    while True:
        worker.adopt_orphans()
        if len(the_study.get_trials(deepcopy=False)) >= search.trials:
            break
        trial = the_study.ask()
        if trial.number >= search.trials:  # another worker took the last number first
            trial.set_user_attr(SURPLUS, True)
            the_study.tell(trial, state=_states().FAIL)
            break
        trial.set_user_attr("worker", f"{os.getpid()} {socket.gethostname()}")
        worker.run(trial, resume=False)
    worker.adopt_orphans()
    return [t for t in the_study.get_trials(deepcopy=False) if t.number < search.trials]


def _states():
    return import_optuna().trial.TrialState


class Worker:
    """Runs trials of one study in this process, one at a time."""

    def __init__(self, study, search: Search, out: Path, log: Callable[[str], None]):
        self.study, self.search, self.out, self.log = study, search, out, log

    def adopt_orphans(self) -> None:
        """Trials left RUNNING by a killed worker: settled from their run directory where it
        ended, resumed from it where it did not."""
        optuna = import_optuna()
        for frozen in self.study.get_trials(deepcopy=False, states=(_states().RUNNING,)):
            run_dir = self.out / trial_dir(frozen.number)
            manifest = read_manifest(run_dir) if run_dir.is_dir() else None
            if frozen.number >= self.search.trials or not _orphaned(frozen, manifest):
                continue
            trial = optuna.trial.Trial(self.study, frozen._trial_id)  # Optuna's own handle
            status = (manifest or {}).get("status")
            if status in ("finished", "pruned", "failed"):  # killed after the run, before tell
                self._settle(trial, run_dir, status, (manifest or {}).get("reason"))
                continue
            self.log(f"[trial {frozen.number}] resuming {run_dir} (its worker was killed)")
            self.run(trial, resume=manifest is not None, adopted=True)

    def run(self, trial, *, resume: bool, adopted: bool = False) -> None:
        from cnnkit.training.callbacks import Pruning
        from cnnkit.training.trainer import train

        run_dir = self.out / trial_dir(trial.number)
        values = {dim.key: dim.sample(trial) for dim in self.search.space}
        overrides = [*self.search.sets, *(override(k, v) for k, v in values.items())]

        def report(epoch: int, value: float) -> bool:
            trial.report(value, epoch)
            return trial.should_prune()

        at = f"[trial {trial.number}/{self.search.trials}]"
        shown_values = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else override(k, v)
                                for k, v in values.items())
        try:
            result = train(self.search.config, out_dir=run_dir, resume=resume, quiet=True,
                           overrides=tuple(overrides), callbacks=[Pruning(report)],
                           command=["cnnkit", "sweep", str(self.search.config), "--search",
                                    self.search.method, f"(trial {trial.number})"])
        except RunPruned as exc:
            _tell(self.study, trial, state=_states().PRUNED)
            self.log(f"{at} {shown_values}: {exc}")
            return
        except TrainingStopped:
            self.log(f"{at} stopped; it stays RUNNING in the study and the next run of the "
                     f"search resumes it")
            raise
        except Exception as exc:  # a trial's crash is its failure; the search goes on
            if adopted and is_locked(run_dir):
                return  # another worker adopted it first
            reason = _one_line(exc) if isinstance(exc, CnnkitError) \
                else f"{type(exc).__name__}: {_one_line(exc)}"
            self._fail(trial, run_dir, reason)
            self.log(f"{at} {shown_values}: failed: {reason}")
            return
        value = best_value(result.history, self.search.monitor)
        _tell(self.study, trial, value)
        self.log(f"{at} {shown_values}: finished, {self.search.monitor} {value:.4f}")

    def _settle(self, trial, run_dir: Path, status: str, reason: str | None) -> None:
        from cnnkit.rundir.metrics import read_metrics

        states = _states()
        if status == "finished":
            _tell(self.study, trial, best_value(read_metrics(run_dir, missing_ok=True),
                                                       self.search.monitor))
        elif status == "pruned":
            _tell(self.study, trial, state=states.PRUNED)
        else:
            self._fail(trial, run_dir, reason or "failed")

    def _fail(self, trial, run_dir: Path, reason: str) -> None:
        if not _tell(self.study, trial, state=_states().FAIL, reason=reason):
            return
        if read_manifest(run_dir) if run_dir.is_dir() else None:
            return  # the run directory already says failed
        run_dir.mkdir(parents=True, exist_ok=True)  # failed before train() opened it
        with lock_directory(run_dir) as lock:
            RunDirectory.start(run_dir, lock, command=["cnnkit", "sweep", "--search"],
                               epochs=0, versions={"cnnkit": version()}, fresh=True
                               ).close("failed", reason)


def _tell(study, trial, value: float | None = None, *, state=None,
          reason: str | None = None) -> bool:
    """study.tell, where another worker may have told the same trial first (from the same
    run directory, so with the same outcome): False then."""
    optuna = import_optuna()
    try:
        if reason is not None:
            trial.set_user_attr("fail_reason", reason)
        study.tell(trial.number, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def _orphaned(frozen, manifest: dict | None) -> bool:
    """A RUNNING trial nobody trains: its run directory unlocked ("interrupted"); or ended,
    or never opened, by a worker on this host that is gone."""
    if manifest is not None and manifest.get("status") == "interrupted":
        return True  # read_manifest: "running" with its lock free
    if manifest is not None and manifest.get("status") == "running":
        return False
    if manifest is not None:  # ended: its worker may be about to tell the study itself
        pid, host = str(manifest.get("pid")), manifest.get("host")
    else:
        pid, _, host = frozen.user_attrs.get("worker", "").partition(" ")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return manifest is not None  # elsewhere: settled by whoever comes first (_tell)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__
