"""`cnnkit train`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cnnkit.errors import TrainingStopped


def run(args: argparse.Namespace) -> int:
    sets = [arg for item in args.set for arg in ("--set", item)]
    command = ["cnnkit", "train", args.config, *(["--out", args.out] if args.out else []),
               *(["--resume"] if args.resume else []), *(["--quiet"] if args.quiet else []),
               *sets]
    return train_command(args.config, out=args.out, resume=args.resume, quiet=args.quiet,
                         sets=args.set, command=command,
                         again=lambda out: ["cnnkit", "train", args.config, "--out", out,
                                            "--resume", *sets])


def train_command(config, *, out: str | None, resume: bool, quiet: bool, sets: list[str],
                  command: list[str], again) -> int:
    """Train, and on a signal print the command that resumes (`again(run_dir)`), exit 128+N."""
    from cnnkit.training.trainer import train

    try:
        train(config, out_dir=out, resume=resume, quiet=quiet, overrides=tuple(sets),
              command=command)
    except TrainingStopped as stopped:
        resume_with = shlex.join(again(str(Path(stopped.checkpoint).parent)))
        text = f"cnnkit: {stopped}\nresume with: {resume_with}"
        print(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
              file=sys.stderr, flush=True)
        return 128 + stopped.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser("train", parents=[common, overrides], help="train a config")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default: the config's out, the run the "
                                 "config.yaml is in, or runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no epoch lines")
    return p
