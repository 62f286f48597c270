"""`cnnkit sweep CONFIG --search random|tpe`: the search flags of `cnnkit sweep` and their
command (cnnkit/experiments/search.py does the work)."""

from __future__ import annotations

import argparse
import shlex
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("search (Optuna; pip install 'cnnkit[search]')")
    group.add_argument("--search", choices=("random", "tpe"),
                       help="sample --trials configs from --space instead of a grid")
    group.add_argument("--trials", type=int, metavar="N",
                       help="trials in the study, over every process that runs this command")
    group.add_argument("--space", action="append", default=[], metavar="KEY.PATH=KIND(ARGS)",
                       help="a searched key (repeatable): loguniform(LO, HI), uniform(LO, HI), "
                            "int(LO, HI) or choice(V1, V2, ...)")
    group.add_argument("--storage", metavar="URL",
                       help="the study's database, shared by machines (e.g. postgresql+psycopg:"
                            "//USER:PASSWORD@HOST/DB); default: the journal file OUT/"
                            "study.journal")
    group.add_argument("--study", metavar="NAME",
                       help="the study's name in the storage (default: OUT's folder name)")


def wanted(args: argparse.Namespace) -> bool:
    """Whether the command is a search; a search flag without --search is an error."""
    given = [flag for flag, value in (("--trials", args.trials), ("--space", args.space or None),
                                      ("--storage", args.storage), ("--study", args.study))
             if value is not None]
    if args.search is None and given:
        from cnnkit.errors import ConfigError

        raise ConfigError(f"{given[0]} belongs to a search: add --search random or --search tpe")
    return args.search is not None


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import ConfigError, TrainingStopped
    from cnnkit.experiments.search import import_optuna, plan_search, run_search

    if args.grid or args.seeds is not None:
        raise ConfigError("--search samples --space; --grid and --seeds belong to a grid sweep")
    if args.jobs != 1:
        raise ConfigError("--jobs: a search runs one trial at a time per process; start the "
                          "same command in more processes (or machines) instead")
    if args.trials is None:
        raise ConfigError("--search needs --trials N, the number of trials in the study")
    search = plan_search(args.config, space=args.space, sets=args.set, trials=args.trials,
                         method=args.search)
    import_optuna()  # the missing package named before any torch import
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        trials = run_search(search, args.out, storage=args.storage, study=args.study,
                            log=lambda line: print(line, flush=True))
    except (TrainingStopped, KeyboardInterrupt) as stopped:
        print(f"cnnkit: {stopped or 'search interrupted'}\nresume it with: {_command()}",
              file=sys.stderr, flush=True)
        return 128 + getattr(stopped, "signum", 2)
    counts: dict[str, int] = {}
    for trial in trials:
        state = trial.state.name.lower().replace("complete", "finished")
        counts[state] = counts.get(state, 0) + 1
    out = shlex.quote(args.out)
    print(f"{len(trials)} of {search.trials} trials: "
          f"{', '.join(f'{n} {s}' for s, n in counts.items())}; the table: cnnkit runs {out}; "
          f"the best config: cnnkit runs {out} --best-config", flush=True)
    return 0


def _command() -> str:
    """This command again (it resumes the search), the storage's password hidden."""
    from cnnkit.experiments.search import shown

    argv, after_storage = [], False
    for arg in sys.argv[1:]:
        if after_storage:
            arg = shown(arg)
        elif arg.startswith("--storage="):
            arg = "--storage=" + shown(arg.removeprefix("--storage="))
        argv.append(arg)
        after_storage = arg == "--storage"
    return shlex.join(["cnnkit", *argv])
