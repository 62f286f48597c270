"""`cnnkit eval`: one checkpoint, or the averaged probabilities of several (and of TTA views)."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    if len(args.checkpoint) > 1 or args.tta:
        return _run_average(args)
    from cnnkit.infer.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint[0], split=args.split, overrides=tuple(args.set))
    if args.json:
        print(json.dumps(result))
    else:
        shown = ("checkpoint", "split", "n", "accuracy", "loss", "weights")
        others = "".join(f", {k} {v:.4f}" for k, v in result.items() if k not in shown)
        weights = " (EMA weights)" if result.get("weights") == "ema" else ""
        print(f"{result['checkpoint']}{weights} on {result['split']} ({result['n']} examples): "
              f"accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}{others}")
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


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", parents=[common, overrides],
                       help="score a checkpoint, or several averaged")
    p.add_argument("checkpoint", nargs="+",
                   help="a checkpoint; several: their softmax probabilities are averaged")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average the probabilities over the image, "
                        "1-px shifts and ±8° rotations (classification)")
    p.add_argument("--json", action="store_true")
    return p
