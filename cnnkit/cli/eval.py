"""`cnnkit eval`."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
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


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", parents=[common, overrides], help="score a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--json", action="store_true")
    return p
