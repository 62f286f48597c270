"""Side-by-side speed of cnnkit's trainer, a minimal hand-written loop, the classic DataLoader
pipeline, big-model training steps, the whole `cnnkit train` process against a hand-written
script (scripts/hand_train.py), an epoch's FLOPs against this machine's matmul peak, and the
class-folder loader against torchvision's reference on real photos (section f). A
benchmark, not a test: it prints ratios and, with --write, puts them in docs/BENCHMARKS.md or
the --doc file (between the bench markers, keeping the notes).

    PYTHONPATH=. python scripts/bench.py --write            # all sections
    PYTHONPATH=. python scripts/bench.py --sections a --repeats 7
    PYTHONPATH=. python scripts/bench.py --sections c --models resnet18 --quick
    PYTHONPATH=. python scripts/bench.py --sections de --repeats 3   # whole command, FLOPs
    PYTHONPATH=. python scripts/bench.py --sections f --photos /tmp/photos --repeats 3
    PYTHONPATH=. python scripts/bench.py --sections ab --train-size 20 --repeats 1 --write \\
        --doc /tmp/bench.md                                 # a smoke run: seconds

Every comparison runs its sides alternately in one process, round after round, and keeps the
best round of each side, so both see the same machine load; `uptime` is recorded around it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision import transforms

from cnnkit.config import load_config
from cnnkit.data import build_data
from cnnkit.data.shards import batches_per_epoch
from cnnkit.data.tensors import Split, TensorLoader
from cnnkit.models.builder import build_model
from cnnkit.runtime.assemble import resolve_device
from cnnkit.runtime.speed import prepare_model, resolve_speed
from cnnkit.schema import DataConfig
from cnnkit.tasks import Classification
from cnnkit.training.loop import Stepper, train_one_epoch
from cnnkit.training.optim import build_scheduler

ROOT = Path(__file__).resolve().parent.parent
ZOO = ("resnet18", "resnet50", "vgg19")  # section c's models: configs/NAME.yaml
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(sides: dict[str, Callable[[int], float]], repeats: int) -> dict[str, float]:
    """Seconds per call of each side: one warm-up call each, then `repeats` alternating
    rounds, keeping each side's fastest."""
    for run in sides.values():
        run(0)
    times = {name: [] for name in sides}
    for r in range(repeats):
        for name, run in sides.items():
            times[name].append(run(r + 1))
    return {name: min(t) for name, t in times.items()}


def timed_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                device: torch.device) -> float:
    """Seconds for one plain pass (forward, cross-entropy, backward, step) over `batches()`,
    the batches made inside the timing: the loop the hand-written and classic sides share."""
    start = time.perf_counter()
    for x, y in batches():
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    loss.item()
    sync(device)
    return time.perf_counter() - start


def settings(speed) -> str:
    """How a cnnkit side ran: `fp32, channels_last`."""
    return f"{speed.precision}, {'channels_last' if speed.channels_last else 'NCHW'}"


# ---------------------------------------------------------------- a: trainer vs hand loop

def course_net(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(load_config(ROOT / "configs" / "mnist_conv.yaml")).to(device)


def cnnkit_side(data, device, batch: int, *, precision: str, channels_last) -> Callable:
    """One epoch of cnnkit's `train_one_epoch` over the on-device training split."""
    model = course_net(device)
    speed = resolve_speed(device, precision=precision, channels_last=channels_last,
                          model=model)
    prepare_model(model, speed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    cfg = load_config(ROOT / "configs" / "mnist_conv.yaml").train
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch=1)
    loader = data.loader("train", batch_size=batch, shuffle=True, seed=0, device=device)
    stepper = Stepper(model, optimizer, scheduler, Classification(), speed=speed)

    def run(epoch: int) -> float:
        return train_one_epoch(stepper, loader, epoch=epoch)[1]

    run.settings = settings(speed)
    return run


def hand_side(data, device, batch: int, *, channels_last: bool = False) -> Callable:
    """The minimal loop: pre-normalized float tensors, randperm, slice, step."""
    split = data.splits["train"]
    mean, std = data.mean[0], data.std[0]
    images = ((split.images.float() / 255 - mean) / std).to(device)
    labels = split.labels.to(device)
    model = course_net(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)
    n = len(labels)

    def batches(epoch: int):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch)).to(device)
        return ((images[index], labels[index]) for index in perm.split(batch))

    return lambda epoch: timed_epoch(model, optimizer, lambda: batches(epoch), device)


# ---------------------------------------------------------------- b: the classic pipeline

class ClassicMNIST(Dataset):
    """torchvision.datasets.MNIST's __getitem__: one PIL image per sample, then transforms."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images[:, 0].numpy(), labels.numpy()
        self.transform = transforms.Compose([transforms.ToTensor(),
                                             transforms.Normalize((0.1307,), (0.3081,))])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def classic_side(data, device, batch: int) -> Callable:
    """pytorch/examples mnist: DataLoader over ClassicMNIST (1 worker, pinned on CUDA)."""
    split = data.splits["train"]
    extra = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    loader = DataLoader(ClassicMNIST(split.images, split.labels), batch_size=batch,
                        shuffle=True, **extra)
    model = course_net(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)

    def batches():
        return ((x.to(device), y.to(device)) for x, y in loader)

    return lambda epoch: timed_epoch(model, optimizer, batches, device)


def passes(side: Callable[[int], float], n: int) -> Callable[[int], float]:
    """Seconds per epoch of `side`, averaged over n epochs in one round: batch 1000's epoch
    is 4 steps of about 0.2 s, inside the noise of one round on its own."""
    def run(r: int) -> float:
        return sum(side(r * n + k) for k in range(n)) / n
    run.settings = getattr(side, "settings", "")
    return run


PASSES = {1000: 8, 64: 1}  # epochs per round, by batch size


def section_a(data, device, repeats: int, rows: list) -> None:
    for batch in (1000, 64):
        sides = {
            "cnnkit, fp32 NCHW": cnnkit_side(data, device, batch, precision="fp32",
                                             channels_last=False),
            "hand loop, fp32 NCHW": hand_side(data, device, batch),
            "cnnkit, defaults": cnnkit_side(data, device, batch, precision="auto",
                                            channels_last="auto"),
            "hand loop, channels_last": hand_side(data, device, batch, channels_last=True),
        }
        defaults = sides["cnnkit, defaults"].settings
        t = best_of({k: passes(v, PASSES[batch]) for k, v in sides.items()}, repeats)
        steps = _steps(data, batch)
        rows.append(("a", f"course conv net, batch {batch}, {steps}",
                     "cnnkit / hand loop, same settings (fp32 NCHW)",
                     t["cnnkit, fp32 NCHW"], t["hand loop, fp32 NCHW"],
                     t["cnnkit, fp32 NCHW"] / t["hand loop, fp32 NCHW"], "≤ 1.05"))
        rows.append(("a", f"course conv net, batch {batch}, {steps}",
                     f"naive hand loop / cnnkit defaults ({defaults})",
                     t["hand loop, fp32 NCHW"], t["cnnkit, defaults"],
                     t["hand loop, fp32 NCHW"] / t["cnnkit, defaults"],
                     "≥ 2" if batch == 1000 and device.type == "cpu" else ""))
        rows.append(("a", f"course conv net, batch {batch}, {steps}",
                     "hand loop fp32 NCHW / hand loop channels_last",
                     t["hand loop, fp32 NCHW"], t["hand loop, channels_last"],
                     t["hand loop, fp32 NCHW"] / t["hand loop, channels_last"], ""))


def section_b(data, device, repeats: int, rows: list) -> None:
    for batch in (64, 1000):
        sides = {"classic": classic_side(data, device, batch),
                 "cnnkit": cnnkit_side(data, device, batch, precision="auto",
                                       channels_last="auto")}
        t = best_of({k: passes(v, PASSES[batch]) for k, v in sides.items()}, repeats)
        goal = "≥ 10" if device.type == "cuda" else ("≥ 2.5" if batch == 64 else "≥ 8")
        steps = _steps(data, batch)
        rows.append(("b", f"course conv net, batch {batch}, {steps}",
                     f"classic pipeline / cnnkit defaults ({sides['cnnkit'].settings})",
                     t["classic"], t["cnnkit"], t["classic"] / t["cnnkit"], goal))


# ---------------------------------------------------------------- d: the whole command

FIRST_STEP = """
import sys, time
import torch
after_torch = time.perf_counter()
from cnnkit.training.callbacks import Callback
from cnnkit.training.trainer import train

class First(Callback):
    def on_step_end(self, run, step):
        if not hasattr(self, "at"):
            self.at = time.perf_counter()

first = First()
train(sys.argv[1], out_dir=sys.argv[2], quiet=True, callbacks=[first],
      overrides=("train.epochs=1",))
print(first.at - after_torch)
"""


def whole_commands(out: Path, epochs: int | None) -> dict[str, list[str]]:
    """The two processes of section d: `cnnkit train` and scripts/hand_train.py."""
    config = str(ROOT / "configs" / "mnist_conv.yaml")
    sets = ["--set", f"train.epochs={epochs}"] if epochs else []
    hand = ["--epochs", str(epochs)] if epochs else []
    return {"cnnkit": [sys.executable, "-m", "cnnkit", "train", config, "--out",
                       str(out / "cnnkit"), *sets],
            "hand": [sys.executable, str(ROOT / "scripts" / "hand_train.py"), "--out",
                     str(out / "hand.pt"), *hand]}


def timed_process(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def section_d(repeats: int, rows: list, *, epochs: int | None) -> None:
    """Whole processes, alternating, best of `repeats`: cnnkit train against the hand-written
    script; then cnnkit's start-up, from the end of `import torch` to the end of the first
    training step (which it includes), best of `repeats`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as scratch:
        # a fresh output each round: cnnkit refuses to train over an existing run
        t = best_of({name: lambda r, name=name: timed_process(
            whole_commands(Path(scratch) / str(r), epochs)[name]) for name in ("cnnkit", "hand")},
            repeats)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        starts = [float(subprocess.run(
            [sys.executable, "-c", FIRST_STEP, str(ROOT / "configs" / "mnist_conv.yaml"),
             str(Path(scratch) / f"first{r}")], check=True, env=env, capture_output=True,
            text=True).stdout.split()[-1]) for r in range(repeats)]
    what = f"{epochs or 30} epochs"
    rows.append(("d", f"course conv net, whole process, {what}",
                 "cnnkit train / hand-written script (scripts/hand_train.py)",
                 t["cnnkit"], t["hand"], t["cnnkit"] / t["hand"], "≤ 0.6"))
    rows.append(("d", "course conv net, cnnkit start-up",
                 "end of import torch to end of first step / 0.5 s goal",
                 min(starts), 0.5, min(starts) / 0.5, "≤ 1"))


# ---------------------------------------------------------------- e: physical terms

def matmul_peak(device: torch.device, *, n: int = 2048, repeats: int = 5,
                dtype: torch.dtype = torch.float32) -> float:
    """This device's measured matmul rate at `dtype`, FLOP/s: best of `repeats` n×n
    products."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best


def epoch_flops(data, device, batch: int) -> float:
    """FLOPs of one training epoch of the course net (forward and backward, every batch),
    counted by torch.utils.flop_counter on one full batch and scaled to the epoch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = course_net(device)
    split = data.splits["train"]
    x = split.images[:batch].float().to(device)
    y = split.labels[:batch].to(device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops() * len(split) / len(x)


def section_e(data, device, repeats: int, rows: list) -> None:
    for batch in (1000,):
        run = cnnkit_side(data, device, batch, precision="auto", channels_last="auto")
        seconds = best_of({"cnnkit": run}, repeats)["cnnkit"]
        flops, peak = epoch_flops(data, device, batch), matmul_peak(device)
        rows.append(("e", f"course conv net, batch {batch}, cnnkit defaults ({run.settings})",
                     f"achieved GFLOP/s ({flops / 1e9:.3g} GFLOP an epoch in {seconds:.3g} s) "
                     f"/ fp32 matmul peak GFLOP/s", flops / seconds / 1e9, peak / 1e9,
                     flops / seconds / peak, ""))


def _steps(data, batch: int) -> str:
    """`4 steps, 8 epochs a round`: what one round of a timed side ran."""
    steps = batches_per_epoch(len(data.splits["train"]), batch)
    return f"{steps} steps" + (f", {PASSES[batch]} epochs a round" if PASSES[batch] > 1 else "")


# ---------------------------------------------------------------- c: big models

def zoo_side(name: str, device, *, batch: int, size: int, steps: int, precision: str,
             channels_last, model: torch.nn.Module | None = None) -> Callable:
    """`steps` SGD training steps of a zoo config (or a given model) on synthetic images,
    through cnnkit's train_one_epoch; returns the seconds they took."""
    if model is None:
        cfg = load_config(ROOT / "configs" / f"{name}.yaml",
                          [f"model.input=[3, {size}, {size}]"])
        model = build_model(cfg)
    model = model.to(device)
    speed = resolve_speed(device, precision=precision, channels_last=channels_last,
                          model=model)
    prepare_model(model, speed)
    generator = torch.Generator().manual_seed(0)
    n = batch * steps
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    split = Split(images, torch.randint(0, 1000, (n,), generator=generator))
    loader = TensorLoader(split, batch_size=batch, shuffle=False, seed=0, mean=(0.5,) * 3,
                          std=(0.25,) * 3, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    stepper = Stepper(model, optimizer, scheduler, Classification(), speed=speed)

    def run(epoch: int) -> float:
        return train_one_epoch(stepper, loader, epoch=epoch)[1]

    run.settings = settings(speed)
    return run


def section_c(device, repeats: int, rows: list, *, quick: bool,
              models: tuple[str, ...] = ZOO, size: int | None = None) -> None:
    if device.type == "cuda":
        batch, size, steps = 64, size or 224, 10 if quick else 30
        variants = {"bf16 channels_last": ("bf16", True), "fp32 NCHW": ("fp32", False)}
    else:
        batch, size, steps = 8, size or 64, 2 if quick else 3
        variants = {"fp32 channels_last": ("fp32", True), "fp32 NCHW": ("fp32", False)}
    # the matmul rate at the dtype the first variant computes in: bf16 on CUDA (its tensor
    # cores), fp32 on the CPU (a small product: a smoke run's seconds, not a figure)
    peak = (matmul_peak(device, n=8192, dtype=torch.bfloat16) if device.type == "cuda"
            else matmul_peak(device, n=1024, repeats=2))
    for name in models:
        sides = {label: zoo_side(name, device, batch=batch, size=size, steps=steps,
                                 precision=p, channels_last=c)
                 for label, (p, c) in variants.items()}
        timm_model = _timm(name) if device.type == "cuda" else None
        if timm_model is not None:
            sides["timm bf16 channels_last"] = zoo_side(
                name, device, batch=batch, size=size, steps=steps, precision="bf16",
                channels_last=True, model=timm_model)
        rates = {k: batch * steps / t for k, t in best_of(sides, repeats).items()}  # images/s
        first, second = list(variants)
        where = f"{name}, {size}×{size}, batch {batch}, {steps} steps"
        rows.append(("c", where, f"{first} vs {second} (images/s)", rates[first],
                     rates[second], rates[first] / rates[second], ""))
        if "timm bf16 channels_last" in rates:
            rows.append(("c", where, f"cnnkit vs timm, {first} (images/s)", rates[first],
                         rates["timm bf16 channels_last"],
                         rates[first] / rates["timm bf16 channels_last"], ""))
        rows.extend(_of_peak(name, device, where, size, rates, first, peak))


def image_flops(name: str, device, size: int) -> float:
    """FLOPs of one image's training step (forward and backward) through the zoo config
    `name` at size × size, counted by torch.utils.flop_counter on a batch of 2."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = load_config(ROOT / "configs" / f"{name}.yaml", [f"model.input=[3, {size}, {size}]"])
    model = build_model(cfg).to(device)
    x = torch.randn(2, 3, size, size, device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=device)).backward()
    return counter.get_total_flops() / 2


def _of_peak(name: str, device, where: str, size: int, rates: dict[str, float], first: str,
             peak: float) -> list[tuple]:
    """Rows of achieved GFLOP/s (images/s × FLOPs an image) against the measured matmul
    peak, for cnnkit's first variant and timm's model where it ran."""
    flops = image_flops(name, device, size)
    dtype = "bf16" if device.type == "cuda" else "fp32"
    return [("c", where, f"{side}: achieved GFLOP/s ({flops / 1e9:.3g} GFLOP an image) / "
                         f"{dtype} matmul peak GFLOP/s", rates[side] * flops / 1e9, peak / 1e9,
             rates[side] * flops / peak, "")
            for side in (first, "timm bf16 channels_last") if side in rates]


def _timm(name: str):
    try:
        import timm
    except ImportError:
        return None
    return timm.create_model(name, pretrained=False)


# ---------------------------------------------------------------- f: class-folder loader

def folder_sides(photos: Path, size: int, *, batch: int, workers: int) -> dict[str, Callable]:
    """One epoch of ROOT/train through cnnkit's loader and through torchvision's reference
    with the same work: ImageFolder (its PIL loader, which ignores EXIF orientation: less
    work than cnnkit's), RandomResizedCrop + flip to uint8 in the workers, a DataLoader of
    the same workers and batch, the same float normalization in the main process."""
    import torchvision
    from torchvision.transforms import v2

    data = build_data(DataConfig(name="imagefolder", root=str(photos), image_size=size,
                                 workers=workers))
    cpu = torch.device("cpu")
    ours = data.loader("train", batch_size=batch, shuffle=True, seed=0, device=cpu)
    reference = DataLoader(
        torchvision.datasets.ImageFolder(str(photos / "train"), transform=v2.Compose([
            v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
            v2.PILToTensor()])),
        batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    scale, shift = ours.scale, ours.shift

    def cnnkit_epoch(epoch: int) -> float:
        begin = time.perf_counter()
        for _ in ours.batches(epoch):
            pass
        return time.perf_counter() - begin

    def reference_epoch(epoch: int) -> float:
        begin = time.perf_counter()
        for x, _ in reference:
            x.float().mul_(scale).sub_(shift)
        return time.perf_counter() - begin

    return {"torchvision": reference_epoch, "cnnkit": cnnkit_epoch}


def _draft_decode(path: Path, scale: int) -> Image.Image:
    with Image.open(path) as image:
        w, h = image.size
        image.draft("RGB", (-(-w // scale), -(-h // scale)))
        image.load()
        return image


def per_image(files: list[Path], size: int) -> dict[str, float]:
    """Milliseconds per image in one process on one thread, step by step (where a worker's
    time goes)."""
    from PIL import ImageOps
    from torchvision.transforms import v2

    from cnnkit.data.decode import decode_train
    from cnnkit.data.transforms import train_transform

    crop = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
                       v2.PILToTensor()])
    ours = train_transform(DataConfig(name="imagefolder", root="x", image_size=size),
                           mean=(0.485, 0.456, 0.406))
    # the crop + resize alone, on images decoded beforehand: a fixed crop of 3/4 of each side
    decoded = {f: Image.open(f).convert("RGB") for f in files}
    tensors = {f: v2.functional.pil_to_tensor(im) for f, im in decoded.items()}

    def box(w: int, h: int) -> tuple[int, int, int, int]:
        return w // 8, h // 8, w // 8 + 3 * w // 4, h // 8 + 3 * h // 4

    def tensor_resize(f: Path) -> torch.Tensor:
        left, top, right, bottom = box(*decoded[f].size)
        return v2.functional.resize(tensors[f][:, top:bottom, left:right], [size, size],
                                    antialias=True)

    steps = {
        "crop + resize of a decoded image: PIL": lambda f: decoded[f].resize(
            (size, size), Image.Resampling.BILINEAR, box=box(*decoded[f].size)),
        "crop + resize of a decoded image: torch uint8 tensor": tensor_resize,
        "decode (full size)": lambda f: Image.open(f).convert("RGB"),
        # DCT scaling shrinks the inverse DCT and colour conversion, not the entropy decoding
        "decode at 1/4 (PIL draft)": lambda f: _draft_decode(f, 4),
        "decode + EXIF transpose (a copy)": lambda f: ImageOps.exif_transpose(
            Image.open(f)).convert("RGB"),
        "torchvision: decode, crop+resize, flip, to tensor": lambda f: crop(
            Image.open(f).convert("RGB")),
        "cnnkit: decode_train (reduced decode, crop, tensor resize, flip)": lambda f: (
            decode_train(f, ours)),
        # each loader item seeds its draws: torch.manual_seed also queues a lazy seed per
        # accelerator, formatting a stack trace each; the loader seeds the CPU generator only
        "seed per image: torch.manual_seed (before)": lambda f: torch.manual_seed(1),
        "seed per image: torch.default_generator.manual_seed (the loader)": lambda f: (
            torch.default_generator.manual_seed(1)),
    }
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker, which torch sets to one thread
    try:
        for name, step in steps.items():
            best = min(_timed(lambda s=step: [s(f) for f in files], 1) for _ in range(3))
            out[name] = 1000 * best / len(files)
        # the batch steps, per image: the worker's collate into one tensor, then the main
        # process's float normalization (one thread here too)
        images = [torch.randint(0, 256, (3, size, size), dtype=torch.uint8) for _ in range(64)]
        stacked = default_collate(images)
        for name, step in {
                "collate, batch of 64 (torch default_collate)": lambda: default_collate(images),
                "normalize to float, batch of 64 (x.float() * scale - shift)": lambda: (
                    stacked.float().mul_(0.02).sub_(1.0))}.items():
            best = min(_timed(step, 20) for _ in range(3))
            out[name] = 1000 * best / (20 * len(images))
    finally:
        torch.set_num_threads(threads)
    return out


def _timed(step: Callable[[], object], n: int) -> float:
    begin = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - begin


def section_f(photos: Path, repeats: int, rows: list, *, sizes: tuple[int, ...],
              batch: int, workers: int) -> None:
    every = sorted((photos / "train").rglob("*.jpg"))
    files = every[::max(1, len(every) // 200)]  # about 200 for the per-image steps
    for size in sizes:
        t = best_of(folder_sides(photos, size, batch=batch, workers=workers), repeats)
        rows.append(("f", f"{len(every):,} photos, {size} px, batch {batch}, {workers} workers",
                     "torchvision reference / cnnkit (epoch s)", t["torchvision"], t["cnnkit"],
                     t["torchvision"] / t["cnnkit"], "≥ 1" if size >= 224 else "≥ 2"))
        for name, ms in per_image(files, size).items():
            print(f"[f] {size} px, one process, {len(files)} images: {name}: {ms:.2f} ms/image",
                  flush=True)


# ---------------------------------------------------------------- report

def machine() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": f"{cpu} ({os.cpu_count()} logical cores, torch threads "
                   f"{torch.get_num_threads()})",
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def render(rows: list, info: dict, loads: tuple[str, str], command: str, device) -> str:
    lines = [f"Command: `{command}`", "",
             *[f"- {k}: {v}" for k, v in info.items()],
             f"- device: {device}", f"- load before: `{loads[0]}`", f"- load after: `{loads[1]}`",
             "", "| | setup | comparison | first | second | ratio | goal |",
             "|---|---|---|---|---|---|---|"]
    for section, where, what, a, b, ratio, goal in rows:
        unit = {"c": "", "e": " GFLOP/s"}.get(section, " s")
        lines.append(f"| {section} | {where} | {what} | {a:.4g}{unit} | {b:.4g}{unit} | "
                     f"**{ratio:.2f}×** | {goal} |")
    return "\n".join(lines) + "\n"


def write_doc(path: Path, block: str, device) -> None:
    """Replace this device's block between the markers; keep everything else."""
    start, end = (f"{START[:-4]} {device.type} -->", f"{END[:-4]} {device.type} -->")
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + block + end + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {device.type.upper()}\n\n{start}\n{block}{end}\n"
    path.write_text(text)


def profile(data, device, batch: int) -> None:
    """Where an epoch of cnnkit's defaults spends its time (torch.profiler, top ops)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    run = cnnkit_side(data, device, batch, precision="auto", channels_last="auto")
    run(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA]
                                           if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        run(1)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="abcde",
                        help="any of a (trainer vs loop), b (classic pipeline), c (big "
                             "models), d (whole command vs hand script), e (FLOPs vs peak), "
                             "f (class-folder loader vs torchvision's, needs --photos); "
                             "default abcde")
    parser.add_argument("--epochs", type=int, metavar="N",
                        help="section d: epochs of both processes (default: the config's 30)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per comparison")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="fewer steps in section c")
    parser.add_argument("--train-size", type=int, metavar="N",
                        help="training digits of sections a and b (default: the sample's "
                             "4,000); fewer for a smoke run")
    parser.add_argument("--models", nargs="+", default=list(ZOO), metavar="NAME",
                        help=f"zoo configs of section c (default: {' '.join(ZOO)})")
    parser.add_argument("--image-size", type=int, metavar="PX",
                        help="section c's image side (default: 224 on CUDA, 64 on a CPU)")
    parser.add_argument("--profile", type=int, metavar="BATCH",
                        help="also profile one epoch of cnnkit's defaults at this batch")
    parser.add_argument("--photos", type=Path, metavar="DIR",
                        help="section f: class folders of photos (scripts/photo_folders.py "
                             "DIR makes them from scikit-image's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 64], metavar="PX",
                        help="section f: image sizes (default 224 64)")
    parser.add_argument("--batch", type=int, default=64, help="section f: batch (default 64)")
    parser.add_argument("--workers", type=int, default=2,
                        help="section f: decoding processes of both sides (default 2)")
    parser.add_argument("--write", action="store_true", help="update the --doc file")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "BENCHMARKS.md",
                        help="the file --write updates (default: docs/BENCHMARKS.md)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    command = "PYTHONPATH=. python scripts/bench.py " + " ".join(argv or sys.argv[1:])
    info = machine()
    for k, v in info.items():
        print(f"{k}: {v}")
    before = uptime()
    print(f"device: {device}\nload before: {before}", flush=True)
    data = build_data(DataConfig(train_size=args.train_size))
    rows: list = []
    for name, section in (("a", section_a), ("b", section_b)):
        if name in args.sections:
            section(data, device, args.repeats, rows)
            _print_rows(rows, name)
    if "d" in args.sections:
        section_d(args.repeats, rows, epochs=args.epochs)
        _print_rows(rows, "d")
    if "e" in args.sections:
        section_e(data, device, args.repeats, rows)
        _print_rows(rows, "e")
    if "f" in args.sections:
        if args.photos is None:
            parser.error("section f needs --photos DIR (scripts/photo_folders.py DIR)")
        section_f(args.photos, args.repeats, rows, sizes=tuple(args.sizes), batch=args.batch,
                  workers=args.workers)
        _print_rows(rows, "f")
    if "c" in args.sections:
        section_c(device, max(2, args.repeats // 2), rows, quick=args.quick,
                  models=tuple(args.models), size=args.image_size)
        _print_rows(rows, "c")
    after = uptime()
    print(f"load after: {after}")
    if args.profile:
        profile(data, device, args.profile)
    if args.write:
        write_doc(args.doc, render(rows, info, (before, after), command.strip(), device), device)
    return 0


def _print_rows(rows: list, section: str) -> None:
    for s, where, what, a, b, ratio, goal in rows:
        if s == section:
            print(f"[{s}] {where}: {what}: {a:.4g} vs {b:.4g} -> {ratio:.2f}x "
                  f"{'(goal ' + goal + ')' if goal else ''}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
