#!/usr/bin/env bash
# Regenerates docs/saliency_mnist_conv.png and docs/activations_mnist_conv.png (README,
# "Look inside a trained network"): trains the course's conv net into a temporary folder,
# writes the first 3 and the first 7 of its validation split as PNGs, and draws them.
# The steps are `cnnkit train`, `cnnkit visualize` (twice) and `cnnkit eval`, run in one
# Python process so that torch is imported once.
usage="Usage: scripts/docs_pictures.sh [--quick] [--out DIR] [PYTHON]
  --quick    train 1 epoch on 300 digits (seconds, a smoke run; the pictures are not the docs')
  --out DIR  write the two PNGs into DIR (default: docs/ of this repository)
  PYTHON     the interpreter with cnnkit installed (default: .venv/bin/python of this repository)"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/docs
python=$root/.venv/bin/python
quick=()
while (($#)); do
    case $1 in
        -h | --help) echo "$usage"; exit 0 ;;
        --quick) quick=(--set train.epochs=1 --set data.train_size=300 --set data.val_size=100)
                 shift ;;
        --out) out=${2:?"--out needs a folder"}; shift 2 ;;
        -*) echo "$usage" >&2; exit 2 ;;
        *) python=$1; shift ;;
    esac
done
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" - "$root/configs/mnist_conv.yaml" "$tmp" "$out" "${quick[@]}" <<'PY'
import shutil
import sys

from PIL import Image

from cnnkit.cli import main
from cnnkit.data.mnist_sample import load

config, tmp, out, *quick = sys.argv[1:]


def cnnkit(*args: str) -> None:
    if code := main(list(args)):
        sys.exit(code)


cnnkit("train", config, "--out", f"{tmp}/run", "--quiet", *quick)
val = load(train_size=None, val_size=None)["val"]
for digit in (3, 7):
    first = int((val.labels == digit).nonzero()[0])
    Image.fromarray(val.images[first, 0].numpy()).save(f"{tmp}/digit_{digit}.png")
cnnkit("visualize", f"{tmp}/run/best.pt", "saliency", "--image", f"{tmp}/digit_3.png",
       "--out", f"{out}/saliency_mnist_conv.png")
cnnkit("visualize", f"{tmp}/run/best.pt", "activations", "--image", f"{tmp}/digit_7.png",
       "--out", f"{tmp}/maps")
shutil.copy(f"{tmp}/maps/layer_0.png", f"{out}/activations_mnist_conv.png")
cnnkit("eval", f"{tmp}/run/best.pt")
PY
