"""The script a user would write for configs/mnist_conv.yaml's job, without cnnkit: what
`scripts/bench.py --sections d` times `cnnkit train configs/mnist_conv.yaml` against.

    python scripts/hand_train.py --out /tmp/hand.pt

fp32, NCHW, eager; the sample's file read with np.load (the .npz that ships inside cnnkit's
package, found by path: no cnnkit code runs); 4,000 digits to train on and 1,000
to validate (a fixed random split); the course's conv net, Adam at lr 0.005, batch 1000, 30
epochs, the validation accuracy printed every epoch; one torch.save at the end.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE = Path(__file__).resolve().parents[1] / "cnnkit" / "data" / "files" / "mnist_5k.npz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="hand.pt", help="the state_dict saved at the end")
    parser.add_argument("--epochs", type=int, default=30, help="default 30, as the config")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with np.load(SAMPLE) as arrays:
        images, labels = arrays["images"], arrays["labels"]
    x = torch.from_numpy(images.reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    x = (x - 0.1307) / 0.3081
    y = torch.from_numpy(labels.astype(np.int64))
    perm = torch.randperm(len(y))
    train, val = perm[:4000], perm[4000:]
    model = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for index in train[torch.randperm(len(train))].split(1000):
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x[val]).argmax(1) == y[val]).float().mean().item()
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss.item():.4f}  val acc {acc:.4f}  "
              f"{time.perf_counter() - start:.2f}s", flush=True)
    torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()
