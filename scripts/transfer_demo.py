"""Transfer learning on real digits, offline: does a conv net pretrained on MNIST digits 0-4
help on digits 5-9 when only 20 labelled examples per class are given?

1. configs/transfer_pretrain.yaml: the course's conv net on digits 0-4 (about 2,000 digits).
2. configs/transfer_digits.yaml: its conv layers, frozen, with a fresh dense head trained on
   100 digits 5-9 (20 per class).
3. The same config from scratch: no weights, nothing frozen, same data, steps and optimizer.

Both are scored on the same 500 validation digits 5-9.

    python scripts/transfer_demo.py [--out runs/transfer_demo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnkit.trainer import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/transfer_demo", help="folder for the three runs")
    parser.add_argument("--verbose", action="store_true", help="print every epoch")
    args = parser.parse_args()
    out = Path(args.out)
    quiet = not args.verbose

    pretrain = train(CONFIGS / "transfer_pretrain.yaml", out_dir=out / "pretrain", quiet=quiet)
    print(f"pretrained on digits 0-4: val acc {_best(pretrain.history):.4f}")
    weights = out / "pretrain" / "best.pt"
    transfer = train(CONFIGS / "transfer_digits.yaml", out_dir=out / "transfer", quiet=quiet,
                     overrides=(f"model.weights={weights}",))
    scratch = train(CONFIGS / "transfer_digits.yaml", out_dir=out / "scratch", quiet=quiet,
                    overrides=("model.weights=null", "train.freeze=[]"))
    print(_table({"transfer (frozen convs, new head)": transfer.history,
                  "from scratch": scratch.history}))


def _best(history: list[dict]) -> float:
    return max(row["val_acc"] for row in history)


def _table(runs: dict[str, list[dict]]) -> str:
    width = max(len(name) for name in runs)
    lines = ["digits 5-9, 20 labelled examples per class, 500 validation digits",
             f"{'run'.ljust(width)}  final val acc  best val acc"]
    for name, history in runs.items():
        lines.append(f"{name.ljust(width)}  {history[-1]['val_acc']:>13.4f}  "
                     f"{_best(history):>12.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
