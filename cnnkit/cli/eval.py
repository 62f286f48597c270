"""`cnnkit eval`: one checkpoint, or the averaged probabilities of several (and of TTA views)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnkit.cli import HelpFormatter
from cnnkit.errors import CnnkitError

EPILOG = """examples:
  cnnkit eval runs/mnist_conv/best.pt
  cnnkit eval runs/mnist_conv/best.pt --json
  cnnkit eval CKPT --split test --set data.name=mnist --set data.root=DIR
  cnnkit eval runs/seed0 runs/seed1 runs/seed2 --tta"""


def run(args: argparse.Namespace) -> int:
    from cnnkit.infer.evaluate import evaluate_checkpoint

    if args.print_config:
        from cnnkit.config import dump_config
        from cnnkit.infer.model import load_predictor

        print(dump_config(load_predictor(args.checkpoint[0], overrides=tuple(args.set)).cfg),
              end="")
        return 0
    if len(args.checkpoint) > 1 or args.tta:
        return _run_average(args)
    result = evaluate_checkpoint(args.checkpoint[0], split=args.split, overrides=tuple(args.set))
    if args.out is not None:
        _write_out(result, Path(args.out))
    if args.json:
        print(json.dumps(result))
        return 0
    shown = ("checkpoint", "split", "n", "accuracy", "loss", "weights", "top5_accuracy",
             "per_class_accuracy", "classes", "confusion_matrix")
    others = "".join(f", {k} {v:.4f}" for k, v in result.items() if k not in shown)
    top5 = f", top-5 {result['top5_accuracy']:.4f}" if "top5_accuracy" in result else ""
    weights = " (EMA weights)" if result.get("weights") == "ema" else ""
    print(f"{result['checkpoint']}{weights} on {result['split']} ({result['n']} examples): "
          f"accuracy {result['accuracy']:.4f}{top5}, loss {result['loss']:.4f}{others}")
    if args.out is not None:
        print(f"wrote {Path(args.out) / 'eval.json'} and {Path(args.out) / 'confusion.png'}"
              if "confusion_matrix" in result else f"wrote {Path(args.out) / 'eval.json'}")
    return 0


def _run_average(args: argparse.Namespace) -> int:
    from cnnkit.infer.ensemble import evaluate_average

    result = evaluate_average(args.checkpoint, split=args.split, tta=args.tta,
                              overrides=tuple(args.set))
    if args.json:
        print(json.dumps(result))
        return 0
    what = [f"{len(args.checkpoint)} checkpoints averaged"] if len(args.checkpoint) > 1 else []
    what += [f"TTA over {result['tta_views']} views"] if args.tta else []
    print(f"{' + '.join(result['checkpoint'])} ({', '.join(what)}) on {result['split']} "
          f"({result['n']} examples): accuracy {result['accuracy']:.4f}, "
          f"loss {result['loss']:.4f}")
    print("each alone, plain images: " + ", ".join(
        f"{m['checkpoint']} {m['accuracy']:.4f}" for m in result["members"]))
    return 0


def _write_out(result: dict, out: Path) -> None:
    """OUT/eval.json (what --json prints) and, for a classifier, OUT/confusion.png."""
    from cnnkit.atomic import atomic_write_text

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    atomic_write_text(out / "eval.json", json.dumps(result, indent=1) + "\n")
    if "confusion_matrix" in result:
        from cnnkit.inspect.visualize import plot_confusion

        title = f"{result['checkpoint']} on {result['split']} ({result['n']} examples)"
        plot_confusion(result["confusion_matrix"], result["classes"], out / "confusion.png",
                       title=title)


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval", parents=[common, overrides], help="score a checkpoint",
        description="Score a checkpoint on a split of the data it was trained on, or on other "
                    "data through --set (the checkpoint's config, overridden). Prints accuracy, "
                    "loss and the task's other metrics (classification: balanced accuracy, "
                    "macro-F1).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="+",
                   help="a cnnkit checkpoint (best.pt, last.pt, an exported file), or a run "
                        "directory (best.pt, else last.pt); several: their softmax "
                        "probabilities are averaged")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="which split to score (default: val; test where the dataset has one)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the probabilities over the image, "
                        "1-px shifts and ±8° rotations (classification)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object with every metric instead of a line; classifiers add "
                        "top5_accuracy (past 5 classes), per_class_accuracy and "
                        "confusion_matrix")
    p.add_argument("--out", metavar="DIR",
                   help="also write DIR/eval.json and, for a classifier, DIR/confusion.png")
    p.add_argument("--print-config", action="store_true",
                   help="print the checkpoint's config (YAML, --set applied) and exit")
    return p
