"""The `cnnkit` command: argument parsing only; the work is done by library functions.

Every error from the user's input prints one line on stderr and exits 2 (a traceback only
with --debug); a malformed command line gets argparse's usage line and error, also exit 2.
`main(argv)` returns the exit code rather than exiting, so tests run commands in-process.

This module imports nothing heavy at its top: torch, matplotlib and tqdm are imported by the
command that needs them, so `cnnkit --help` and `cnnkit --version` stay fast
(`python -X importtime -m cnnkit --help` shows what is imported)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from cnnkit.errors import CnnkitError, TrainingStopped


def _cmd_train(args: argparse.Namespace) -> int:
    from cnnkit.training.trainer import train

    try:
        train(args.config, out_dir=args.out, resume=args.resume, quiet=args.quiet,
              overrides=tuple(args.set))
    except TrainingStopped as stopped:
        sets = [arg for item in args.set for arg in ("--set", item)]
        command = ["cnnkit", "train", args.config, "--out", str(Path(stopped.checkpoint).parent),
                   "--resume", *sets]
        print(f"cnnkit: {stopped}\nresume with: {shlex.join(command)}", file=sys.stderr,
              flush=True)
        return 128 + stopped.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from cnnkit.config import load_config
    from cnnkit.inspect.summary import format_summary, summarize
    from cnnkit.models.builder import build_model
    from cnnkit.models.freeze import freeze_for_training

    cfg = load_config(args.config, tuple(args.set))
    model = build_model(cfg)
    freeze_for_training(model, cfg.train, source=cfg.source)  # so frozen layers show as such
    summary = summarize(model)
    print(json.dumps(summary) if args.json else format_summary(summary, title=args.config))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from cnnkit.infer.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, split=args.split, overrides=tuple(args.set))
    if args.json:
        print(json.dumps(result))
    else:
        shown = ("checkpoint", "split", "n", "accuracy", "loss", "weights")
        others = "".join(f", {k} {v:.4f}" for k, v in result.items() if k not in shown)
        weights = " (EMA weights)" if result.get("weights") == "ema" else ""
        print(f"{result['checkpoint']}{weights} on {result['split']} ({result['n']} examples): "
              f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}{others}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from cnnkit.checkpoint import load_checkpoint
    from cnnkit.infer.locate import format_prediction, predict_localization, task_of
    from cnnkit.infer.predict import format_predictions, predict_images

    checkpoint = load_checkpoint(args.checkpoint)
    if task_of(checkpoint) == "localization":
        top = 1 if args.top is None else args.top  # the box's class, unless more are asked for
        results = predict_localization(args.checkpoint, args.images, out_dir=args.out, top=top,
                                       device=args.device, checkpoint=checkpoint)
        print(json.dumps(results) if args.json else "\n".join(map(format_prediction, results)))
        return 0
    if args.out is not None:
        raise CnnkitError(f"--out: draws boxes of localization checkpoints; "
                          f"{args.checkpoint} is a classifier")
    top = 5 if args.top is None else args.top
    results = predict_images(args.checkpoint, args.images, top=top, device=args.device,
                             checkpoint=checkpoint)
    print(json.dumps(results) if args.json else format_predictions(results))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from cnnkit.training.curves import plot_runs, read_metrics

    runs = {Path(d).name: read_metrics(d) for d in args.run_dirs}
    missing = [name for name, rows in runs.items() if args.metric not in rows[0]]
    if missing:
        raise CnnkitError(f"--metric {args.metric}: not in the metrics of {', '.join(missing)} "
                          f"(has {', '.join(next(iter(runs.values()))[0])})")
    plot_runs(runs, args.out, metric=args.metric)
    print(f"wrote {args.out}")
    return 0


def _cmd_visualize(args: argparse.Namespace) -> int:
    from cnnkit.inspect.visualize import visualize

    paths = visualize(args.checkpoint, args.kind, out=args.out, layer=getattr(args, "layer", None),
                      image=getattr(args, "image", None))
    print(f"wrote {paths[0]}" if len(paths) == 1 else
          f"wrote {len(paths)} files in {paths[0].parent}: {', '.join(p.name for p in paths)}")
    return 0


class _Version(argparse.Action):
    """--version: the installed package's version, read from its metadata only when asked."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from cnnkit import __version__

        print(f"cnnkit {__version__}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand that does not see --debug leaves the attribute alone, so
    # `cnnkit --debug train x` keeps it (a False default there would overwrite it)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                           help="override a config value (repeatable), e.g. train.lr=0.001")
    parser = argparse.ArgumentParser(prog="cnnkit", parents=[common],
                                     description="Train and inspect CNNs described in YAML.")
    parser.add_argument("--version", action=_Version, help="print cnnkit's version and exit")
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

    p = sub.add_parser("predict", parents=[common], help="classes (or boxes) of image files")
    p.add_argument("checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=int, metavar="K",
                   help="the K most probable classes per image (default 5; for a localization "
                        "checkpoint 1, the class of its box)")
    p.add_argument("--out", metavar="DIR",
                   help="localization: write each image with its predicted box drawn")
    p.add_argument("--json", action="store_true")
    p.add_argument("--device", default="auto",
                   help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("plot", parents=[common], help="overlay the curves of several runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison.png")
    p.add_argument("--metric", default="val_acc")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("visualize", parents=[common], help="filters, feature maps, saliency")
    p.add_argument("checkpoint")
    pictures = p.add_subparsers(dest="kind", required=True, metavar="PICTURE")
    q = pictures.add_parser("filters", parents=[common], help="a conv layer's weights (PNG)")
    q.add_argument("--layer", help="conv layer path (default: the first)")
    q.add_argument("--out", metavar="FILE", help="default: filters.png")
    q = pictures.add_parser("activations", parents=[common],
                            help="each conv layer's feature maps for an image (PNGs in a folder)")
    q.add_argument("--image", required=True)
    q.add_argument("--out", metavar="DIR", help="default: activations/")
    q = pictures.add_parser("saliency", parents=[common],
                            help="the top class's input gradient over the image (PNG)")
    q.add_argument("--image", required=True)
    q.add_argument("--out", metavar="FILE", help="default: saliency.png")
    p.set_defaults(func=_cmd_visualize)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `cnnkit ARGV` (sys.argv[1:] when None) and return its exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error argparse has printed
        return int(exit_.code or 0)  # argparse exits with 0 or 2
    try:
        return args.func(args)
    except CnnkitError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
