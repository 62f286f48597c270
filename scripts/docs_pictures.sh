#!/usr/bin/env bash
# Regenerates docs/saliency_mnist_conv.png and docs/activations_mnist_conv.png (README,
# "Look inside a trained network"): trains the course's conv net into a temporary folder,
# writes the first 3 and the first 7 of its validation split as PNGs, and draws them.
# Usage: scripts/docs_pictures.sh [PYTHON]   (default: .venv/bin/python)
set -euo pipefail
python=${1:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m cnnkit train configs/mnist_conv.yaml --out "$tmp/run" --quiet
"$python" - "$tmp" <<'PY'
import sys
from PIL import Image
from cnnkit.data.mnist_sample import load
val = load(train_size=None, val_size=None)["val"]
for digit in (3, 7):
    first = int((val.labels == digit).nonzero()[0])
    Image.fromarray(val.images[first, 0].numpy()).save(f"{sys.argv[1]}/digit_{digit}.png")
PY
"$python" -m cnnkit visualize "$tmp/run/best.pt" saliency --image "$tmp/digit_3.png" \
    --out docs/saliency_mnist_conv.png
"$python" -m cnnkit visualize "$tmp/run/best.pt" activations --image "$tmp/digit_7.png" \
    --out "$tmp/maps"
cp "$tmp/maps/layer_0.png" docs/activations_mnist_conv.png
"$python" -m cnnkit eval "$tmp/run/best.pt"
