"""`cnnkit train`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from cnnkit.cli import HelpFormatter
from cnnkit.errors import TrainingStopped, display

EPILOG = """examples:
  cnnkit train mnist_conv
  cnnkit train resnet18 --set data.root=PHOTOS --set data.image_size=128 --set train.epochs=5
  cnnkit train configs/mnist_conv.yaml --set train.lr=0.001 --out runs/lr0.001
  cnnkit train mnist_conv --out runs/mnist_conv --resume
  cnnkit train finetune_resnet18 --set data.root=PHOTOS --print-config"""

def run(args: argparse.Namespace) -> int:
    if args.print_config:  # the keys that apply, and the run directory it would train into
        import dataclasses

        from cnnkit.config import dump_config, load_config, unread_keys
        from cnnkit.tasks import unread_task_keys
        from cnnkit.training.trainer import default_out_dir

        cfg = load_config(args.config, tuple(args.set))
        cfg = dataclasses.replace(cfg, out=str(args.out or default_out_dir(cfg)))
        print(dump_config(cfg, drop=[*unread_keys(cfg), *unread_task_keys(cfg)]), end="")
        return 0
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
        print(display(text), file=sys.stderr, flush=True)
        return 128 + stopped.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", parents=[common, overrides], help="train a config",
        description="Train the model a config describes on its data, writing metrics.csv, "
                    "curves.png, last.pt, best.pt and the resolved config.yaml to the run "
                    "directory. The config is a YAML file or the name of a config that ships with "
                    "cnnkit (`cnnkit configs`); a file on disk wins.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("config",
                   help="a config file, or a shipped config's name (e.g. mnist_conv, resnet18)")
    p.add_argument("--out", metavar="DIR",
                   help="run directory (default: the config's out, the run the config.yaml "
                        "is in, or runs/CONFIG_NAME)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in OUT from its last.pt (default: a new run)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar, no epoch lines (warnings and errors still print)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (YAML, --set applied) and exit without "
                        "training")
    return p
