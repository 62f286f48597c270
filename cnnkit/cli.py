"""The `cnnkit` command: argument parsing only; the work is done by library functions.

Every error from the user's input prints one line on stderr and exits 2 (a traceback only
with --debug)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnkit.errors import CnnkitError


def _cmd_train(args: argparse.Namespace) -> int:
    from cnnkit.trainer import train

    train(args.config, out_dir=args.out, resume=args.resume, quiet=args.quiet,
          overrides=tuple(args.set))
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from cnnkit.builder import build_model
    from cnnkit.summary import format_summary, summarize

    summary = summarize(build_model(args.config, overrides=tuple(args.set)))
    print(json.dumps(summary) if args.json else format_summary(summary, title=args.config))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from cnnkit.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, split=args.split, overrides=tuple(args.set))
    if args.json:
        print(json.dumps(result))
    else:
        shown = ("checkpoint", "split", "n", "accuracy", "loss")
        others = "".join(f", {k} {v:.4f}" for k, v in result.items() if k not in shown)
        print(f"{result['checkpoint']} on {result['split']} ({result['n']} examples): "
              f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}{others}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cnnkit.checkpoint import load_checkpoint
    from cnnkit.locate import format_prediction, predict_localization, task_of

    checkpoint = load_checkpoint(args.checkpoint)
    task = task_of(checkpoint)
    if task != "localization":
        raise CnnkitError(f"{args.checkpoint}: predict handles localization checkpoints here; "
                          f"this one's task is {task}")
    results = predict_localization(args.checkpoint, args.images, out_dir=args.out,
                                   checkpoint=checkpoint)
    print(json.dumps(results) if args.json else "\n".join(map(format_prediction, results)))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from cnnkit.plotting import plot_runs, read_metrics

    runs = {Path(d).name: read_metrics(d) for d in args.run_dirs}
    missing = [name for name, rows in runs.items() if args.metric not in rows[0]]
    if missing:
        raise CnnkitError(f"--metric {args.metric}: not in the metrics of {', '.join(missing)} "
                          f"(has {', '.join(next(iter(runs.values()))[0])})")
    plot_runs(runs, args.out, metric=args.metric)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                           help="override a config value (repeatable), e.g. train.lr=0.001")
    parser = argparse.ArgumentParser(prog="cnnkit", parents=[common],
                                     description="Train and inspect CNNs described in YAML.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", parents=[common, overrides], help="train a config")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default: the config's out, or runs/NAME)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no epoch lines")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("summary", parents=[common, overrides], help="layers, shapes, parameters")
    p.add_argument("config")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("eval", parents=[common, overrides], help="score a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("predict", parents=[common], help="predict on image files")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", metavar="DIR", help="write each image with its prediction drawn")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("plot", parents=[common], help="overlay the curves of several runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison.png")
    p.add_argument("--metric", default="val_acc")
    p.set_defaults(func=_cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CnnkitError as exc:
        if args.debug:
            raise
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
