"""`cnnkit eval`."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli import HelpFormatter

EPILOG = """examples:
  cnnkit eval runs/mnist_conv/best.pt
  cnnkit eval runs/mnist_conv/best.pt --json
  cnnkit eval CKPT --split test --set data.name=mnist --set data.root=DIR"""

def run(args: argparse.Namespace) -> int:
    from cnnkit.infer.evaluate import evaluate_checkpoint

    if args.print_config:
        from cnnkit.checkpoint import load_checkpoint
        from cnnkit.config import dump_config
        from cnnkit.infer.model import config_of_checkpoint

        cfg = config_of_checkpoint(load_checkpoint(args.checkpoint), args.checkpoint,
                                   tuple(args.set))
        print(dump_config(cfg), end="")
        return 0
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


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval", parents=[common, overrides], help="score a checkpoint",
        description="Score a checkpoint on a split of the data it was trained on, or on other "
                    "data through --set (the checkpoint's config, overridden). Prints accuracy, "
                    "loss and the task's other metrics (classification: balanced accuracy, "
                    "macro-F1).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a cnnkit checkpoint (best.pt, "
                   "last.pt)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"],
                   help="which split to score (default: val; test where the dataset has one)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object with every metric instead of a line")
    p.add_argument("--print-config", action="store_true",
                   help="print the checkpoint's config (YAML, --set applied) and exit")
    return p
