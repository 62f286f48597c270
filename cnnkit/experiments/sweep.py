"""Sweeps: one config, the product of grids of values (and seeds), one run directory each.

    plan = plan_sweep("configs/mnist_conv.yaml", grids=["train.lr=[0.001, 0.005]"],
                      seeds=[0, 1, 2])
    run_sweep(plan, "runs/lr_sweep", jobs=1)

Every member is checked as `--set` would check it before anything starts. DIR/sweep.json maps
each member's name to its full overrides, the threads it runs with and, where it failed, the
one-line reason. A member is `train()` itself: in this process (jobs=1) or in a
`python -m cnnkit train` child per member (jobs=N), with OMP/MKL held to a fixed share of the
cores, recorded, so a resumed member runs with the threads it started with and repeats bit
for bit. Running the sweep again skips finished and failed members and resumes an
interrupted one from its own last.pt.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnkit.atomic import atomic_write_text
from cnnkit.config import load_config
from cnnkit.errors import CnnkitError, ConfigError, TrainingStopped, counted
from cnnkit.experiments.groups import SEED
from cnnkit.experiments.names import key_columns, run_name, short_hash
from cnnkit.rundir import LAST, MANIFEST, METRICS
from cnnkit.rundir import SWEEP as SWEEP_FILE
from cnnkit.rundir.records import RunRecord, read_run, read_sweep

MAX_RUNS = 1000  # more than this many members asks for `yes`


@dataclass
class Member:
    name: str
    overrides: list[str]  # the sweep's --set items, then this member's grid values and seed


@dataclass
class Plan:
    config: Path
    grid: dict[str, list[Any]]
    seeds: list[int] | None
    sets: list[str]
    members: list[Member] = field(default_factory=list)


def parse_grid(item: str) -> tuple[str, list[Any]]:
    """`train.lr=[0.001, 0.01]` -> ("train.lr", [0.001, 0.01]); the values are a YAML list."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--grid {item!r}: expected KEY.PATH=[V1, V2, ...], "
                          f"e.g. train.lr=[0.001, 0.01]")
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"--grid {item!r}: the values are not valid YAML ({first})") from None
    if not isinstance(values, list):
        raise ConfigError(f"--grid {item!r}: expected a YAML list of values, "
                          f"e.g. {key}=[1, 2]")
    if not values:
        raise ConfigError(f"--grid {item!r}: the list of values is empty")
    return key, values


def override(key: str, value: Any) -> str:
    """`KEY=VALUE` as `--set` reads it back (the value as one line of YAML)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def plan_sweep(config: str | Path, *, grids: Sequence[str] = (),
               seeds: Sequence[int] | None = None, sets: Sequence[str] = (),
               yes: bool = False) -> Plan:
    """The members of a sweep, each config checked; nothing is written."""
    grid: dict[str, list[Any]] = {}
    for item in grids:
        key, values = parse_grid(item)
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; put all its values in one list")
        grid[key] = values
    if seeds is not None:
        if SEED in grid:
            raise ConfigError(f"--grid {SEED} and --seeds both set the seed; give one of them")
        if not seeds:
            raise ConfigError("--seeds: expected at least one seed")
        grid[SEED] = list(dict.fromkeys(seeds))
    if not grid:
        raise ConfigError("nothing to sweep: give --grid KEY=[V1, V2, ...] or --seeds")
    count = 1
    for values in grid.values():
        count *= len(values)
    if count > MAX_RUNS and not yes:
        raise ConfigError(f"the grid makes {count:,} runs (more than {MAX_RUNS:,}); "
                          f"pass --yes to start them all")
    plan = Plan(Path(config), grid, None if seeds is None else grid[SEED], list(sets))
    load_config(plan.config, plan.sets)  # the file and the sweep's --set, on their own
    _check_each_value(plan)
    columns = key_columns(list(grid))
    for combo in itertools.product(*grid.values()):
        overrides = [*plan.sets, *(override(k, v) for k, v in zip(grid, combo))]
        name = run_name(list(zip(columns, combo)), digest_of="\n".join(overrides))
        plan.members.append(Member(name, overrides))
    _make_names_unique(plan.members)
    for member in plan.members:
        try:
            load_config(plan.config, member.overrides)
        except ConfigError as exc:
            raise ConfigError(f"run {member.name}: {exc}") from None
    return plan


def _check_each_value(plan: Plan) -> None:
    """Each grid value alone on the config: an unknown key or a wrong type is named by its
    --grid before the combinations (which add the cross-key rules) are checked."""
    for key, values in plan.grid.items():
        for value in values:
            try:
                load_config(plan.config, [*plan.sets, override(key, value)])
            except ConfigError as exc:
                raise ConfigError(f"--grid {key}: value {value!r}: {exc}") from None


def _make_names_unique(members: list[Member]) -> None:
    """Two members whose names read the same (a value with `/` in it, a long name cut)
    each get a hash of their overrides."""
    seen: dict[str, int] = {}
    for member in members:
        seen[member.name] = seen.get(member.name, 0) + 1
    for member in members:
        if seen[member.name] > 1:
            member.name = f"{member.name}~{short_hash(chr(10).join(member.overrides))}"


@contextlib.contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """The sweep's own lock on its folder: a second sweep of DIR refuses to start. An flock
    that the kernel drops with the process, as the run directory's (rundir/lock.py); a
    file of its own, since the run lock names its holder from run.json and a sweep folder
    has none, and each member's run directory takes the run lock as well."""
    import fcntl

    fd = os.open(out / ".sweep.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").split() or ["?", "?"]
        os.close(fd)
        raise CnnkitError(f"sweep directory {out} is in use by process {holder[0]} on "
                          f"{holder[-1]}") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield
    finally:
        os.close(fd)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run_sweep(plan: Plan, out: str | Path, *, jobs: int = 1, threads: int | None = None,
              log: Callable[[str], None] = print) -> list[RunRecord]:
    """Run (or resume) every member; the records of all of them at the end."""
    out = Path(out)
    if jobs < 1 or (threads is not None and threads < 1):
        raise ConfigError(f"--jobs {jobs} --threads {threads}: expected positive integers")
    _check_ours(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"{out}: cannot create the sweep folder ({exc.strerror})") from None
    share = threads or max(1, cores() // jobs)
    with sweep_lock(out):  # the sweep's lock: see sweep_lock
        book = _Book(out, plan)
        todo = []
        for i, member in enumerate(plan.members, 1):
            resume = book.state(member)
            if resume is None:
                log(f"[{i}/{len(plan.members)}] {member.name}: skipped, "
                    f"{book.record(member).status_text}")
            else:
                todo.append((i, member, resume))
        log(f"sweep: {counted(len(plan.members), 'run')} in {out}/, {len(todo)} to run, "
            f"{jobs} at a time, "
            f"{share} thread{'s' if share > 1 else ''} each")
        runner = _in_process if jobs == 1 else _children
        runner(book, todo, jobs=jobs, share=share, log=log)
        return [book.record(member) for member in plan.members]


def _check_ours(out: Path) -> None:
    """A sweep goes into a new or empty folder, or one its sweep.json (format 1) says is a
    sweep; never into a run directory (one being trained included) or a user's folder."""
    if not out.is_dir():
        return
    if any((out / name).exists() for name in (MANIFEST, LAST, METRICS)):
        raise CnnkitError(f"{out}: is a run directory, not a sweep folder; give the sweep "
                          f"another --out")
    sweep = read_sweep(out)
    if sweep is None and any(p.name not in (".sweep.lock", CHILD_LOGS) for p in out.iterdir()):
        raise CnnkitError(f"{out}: holds files but is not a cnnkit sweep folder (no "
                          f"{SWEEP_FILE}); give the sweep a new or empty --out")
    if sweep is not None and sweep.get("format") != 1:
        raise CnnkitError(f"{out / SWEEP_FILE}: not a cnnkit sweep file (no \"format\": 1)")


class _Book:
    """DIR/sweep.json: the members, their threads and recorded failures; written atomically
    after every change."""

    def __init__(self, out: Path, plan: Plan):
        self.out, self.plan = out, plan
        self.data = read_sweep(out) or {"format": 1, "config": str(plan.config.resolve()),
                                        "grid": plan.grid, "seeds": plan.seeds, "runs": {}}
        if self.data.get("config") != str(plan.config.resolve()):
            raise CnnkitError(f"{out / SWEEP_FILE}: a sweep of {self.data.get('config')}, not "
                              f"of {plan.config}; give the sweep another --out")
        self.data.update(grid=plan.grid, seeds=plan.seeds)  # the latest command's
        earlier, runs = self.data["runs"], {}
        for member in plan.members:  # in the command's order, then any left out of it
            runs[member.name] = entry = earlier.get(member.name,
                                                    {"overrides": member.overrides})
            if entry["overrides"] != member.overrides:
                raise CnnkitError(f"{out / SWEEP_FILE}: run {member.name} was started with "
                                  f"{' '.join(entry['overrides'])}; give the sweep another "
                                  f"--out")
        self.data["runs"] = {**runs, **{k: v for k, v in earlier.items() if k not in runs}}
        self.save()

    def entry(self, member: Member) -> dict:
        return self.data["runs"][member.name]

    def save(self) -> None:
        atomic_write_text(self.out / SWEEP_FILE, json.dumps(self.data, indent=1) + "\n")

    def record(self, member: Member) -> RunRecord:
        return read_run(self.out / member.name, failure=self.entry(member).get("failed"))

    def state(self, member: Member) -> bool | None:
        """None: nothing to do (finished or failed); else whether to resume from last.pt."""
        run_dir = self.out / member.name
        if not run_dir.exists() and self.entry(member).pop("failed", None) is not None:
            self.save()  # its folder was removed: run it again
        record = self.record(member)
        if record.status in ("finished", "failed"):
            return None
        if record.status == "running":
            raise CnnkitError(f"{run_dir}: is being trained by another process")
        return (run_dir / LAST).exists()

    def started(self, member: Member, share: int) -> int:
        """The member's threads: those it first ran with, recorded now if it is new."""
        entry = self.entry(member)
        entry.setdefault("threads", share)
        entry.pop("failed", None)
        self.save()
        return entry["threads"]

    def ended(self, member: Member, failure: str | None, *, log, at: str) -> None:
        if failure is not None:
            self.entry(member)["failed"] = failure
            self.save()
        record = self.record(member)
        log(f"{at} {member.name}: {record.status_text}{_summary(record)}")


def _summary(record: RunRecord) -> str:
    if not record.history or record.monitor not in record.history[0]:
        return ""
    values = [row[record.monitor] for row in record.history]
    best = max(values) if not record.monitor.endswith("loss") else min(values)
    return (f"  {record.monitor} {values[-1]:.4f} (best {best:.4f} at epoch "
            f"{values.index(best) + 1})  {record.seconds:.1f}s")


def _in_process(book: _Book, todo: list, *, jobs: int, share: int, log) -> None:
    import torch

    from cnnkit.training.trainer import train

    for i, member, resume in todo:
        at = f"[{i}/{len(book.plan.members)}]"
        threads = book.started(member, share)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        failure = None
        try:
            train(book.plan.config, out_dir=book.out / member.name, resume=resume, quiet=True,
                  overrides=tuple(member.overrides))
        except TrainingStopped:
            log(f"{at} {member.name}: stopped; run the sweep again to resume it")
            raise
        except CnnkitError as exc:
            failure = _one_line(str(exc))
        except Exception as exc:  # a run's crash is its failure; the sweep goes on
            failure = _one_line(f"{type(exc).__name__}: {exc}")
        finally:
            torch.set_num_threads(before)
        book.ended(member, failure, log=log, at=at)


def _children(book: _Book, todo: list, *, jobs: int, share: int, log) -> None:
    """`python -m cnnkit train` per member, `jobs` at a time; Ctrl-C is passed on to each
    child once (they save and stop), then re-raised here."""
    waiting, running = list(todo), {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                i, member, resume = waiting.pop(0)
                running[_spawn(book, member, resume, book.started(member, share))] = (i, member)
            time.sleep(0.05)
            for child in [c for c in running if c.poll() is not None]:
                i, member = running.pop(child)
                child.log.close()
                failure = _child_failure(child, _child_log(book, member))
                book.ended(member, failure, log=log, at=f"[{i}/{len(book.plan.members)}]")
    except KeyboardInterrupt:
        for child in running:
            child.send_signal(signal.SIGINT)
        for child in running:
            child.wait()
            child.log.close()
        raise


# a child's console (its error line, a traceback) goes here, in the sweep's folder: the run
# directory is the child's to create, and a folder the parent had put a file in would be
# refused by the child as "not a cnnkit run directory"
CHILD_LOGS = ".children"


def _child_log(book: _Book, member: Member) -> Path:
    return book.out / CHILD_LOGS / f"{member.name}.log"


def _spawn(book: _Book, member: Member, resume: bool, threads: int) -> subprocess.Popen:
    run_dir = book.out / member.name
    sets = [arg for item in member.overrides for arg in ("--set", item)]
    argv = [sys.executable, "-m", "cnnkit", "train", str(book.plan.config), "--out",
            str(run_dir), "--quiet", *sets, *(["--resume"] if resume else [])]
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding cnnkit/
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(p for p in (package_root,
                                                      os.environ.get("PYTHONPATH")) if p)}
    _child_log(book, member).parent.mkdir(exist_ok=True)
    log = open(_child_log(book, member), "a")
    # its own session: a Ctrl-C reaches the child once, from here; it dies with this process
    child = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, preexec_fn=_die_with_parent)
    child.log = log
    return child


def _die_with_parent() -> None:
    """Linux: SIGTERM (save and stop) to the child when the sweep process dies, however."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child_failure(child: subprocess.Popen, log: Path) -> str | None:
    """The failure's line from a child's console log; None where it finished or was stopped
    (an interrupted member is resumed by the next run of the sweep)."""
    if child.returncode == 0 or child.returncode in (130, 143) or child.returncode < 0:
        return None
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("cnnkit: error: ")]
    if errors:
        return errors[-1].removeprefix("cnnkit: error: ")
    return _one_line(lines[-1] if lines else f"exit status {child.returncode}")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "no message"
