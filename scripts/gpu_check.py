"""The prepared GPU check: every CUDA path of cnnkit in one run, each step under its own
timeout, pass/skip/fail and seconds per step, then a log and a JSON summary.

Run it through scripts/gpu_check.sh, which gives it a temporary folder, restarts it after a
step that hung (the driver records that step as failed and ends itself; the shell starts it
again with --resume and it goes on with the next step) and copies the log, the summary and
bench.py's table to $OUT:

    bash scripts/gpu_check.sh                 # on a CUDA machine: about 4 minutes on one H100
    bash scripts/gpu_check.sh --cpu-dry-run   # every step with CPU stand-ins and tiny sizes

Most steps run in this one process (each process pays `import torch`); the CUDA tests,
scripts/bench.py and DDP run as child processes, as a user runs them. cnnkit is driven through
its command line (`cnnkit.cli.main`), its config schema and its public face. Steps whose
feature has not landed (class-folder augmentation, batch mixing, data-wait telemetry, GPU JPEG
decoding, scripts/photo_folders.py) are looked up at run time and skipped with the reason.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import re
import runpy
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback
import typing
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HUNG = 3  # exit status: a step hung and was recorded; the shell resumes after it
STATUSES = ("pass", "skip", "fail")


class Log:
    """say(line): to stdout and the log; note(text): to the log only."""

    def __init__(self, path: Path):
        self.path = path

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.note(line)

    def note(self, text: str) -> None:
        with open(self.path, "a", encoding="utf-8", errors="replace") as f:
            f.write(text if text.endswith("\n") else text + "\n")


class Summary:
    """The JSON summary, written after every change, so a killed driver loses nothing."""

    def __init__(self, path: Path, *, mode: str, budget: float, resume: bool):
        self.path = path
        if resume and path.exists():
            self.data = json.loads(path.read_text())
        else:
            self.data = {"mode": mode, "started": time.time(), "budget_s": budget,
                         "host": platform.node(), "python": platform.python_version(),
                         "steps": []}
        self.save()

    def steps(self) -> dict[str, dict]:
        return {s["name"]: s for s in self.data["steps"]}

    def record(self, name: str, status: str, seconds: float, detail: str) -> dict:
        entry = {"name": name, "status": status, "seconds": round(seconds, 1),
                 "detail": detail}
        self.data["steps"] = [s for s in self.data["steps"] if s["name"] != name] + [entry]
        self.save()
        return entry

    def elapsed(self) -> float:
        return time.time() - self.data["started"]

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


# ---------------------------------------------------------------- what every step uses

DIGITS = ("data.train_size=200", "data.val_size=100")  # a dry run's digits: seconds on a CPU
# what the start header in train.log says: `device cuda:0, precision bf16, ... compile on`
DEVICE, PRECISION, COMPILE = r"device (\S+),", r"precision (\w+)", r"compile (\w+)"


@dataclass
class Check:
    dry: bool
    work: Path
    log: Log
    python: str
    # what a later step reads (GPU count, eager epoch time, `blocked`: why every later step
    # skips); kept in the JSON summary, so a driver started again after a hang has it too
    facts: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return "cpu" if self.dry else "cuda"


@dataclass
class Trained:
    """A `cnnkit train` run: its exit code, what it printed, its warnings, its run directory
    read back (metrics.csv rows, train.log)."""

    code: int
    text: str
    warnings: list[str]
    out: Path
    wall: float
    rows: list[dict] = field(default_factory=list)
    log: str = ""

    def last(self, key: str) -> float:
        return float(self.rows[-1][key])

    def seconds(self) -> list[float]:
        return [float(row["seconds"]) for row in self.rows]

    def warm(self) -> float:
        """Median seconds of an epoch after the first (which pays cuDNN's autotuning)."""
        return statistics.median(self.seconds()[1:] or self.seconds())

    def header(self, pattern: str) -> str:
        """A value of the start header in train.log, e.g. header(PRECISION)."""
        found = re.search(pattern, self.log)
        return found[1] if found else "?"

    def failed(self) -> tuple[str, str] | None:
        if self.code == 0:
            return None
        lines = [line for line in self.text.splitlines() if line.strip()]
        return "fail", f"exit {self.code}: {lines[-1] if lines else 'no output'}"


def cnnkit(check: Check, *argv: str) -> tuple[int, str, list[str]]:
    """`cnnkit ARGV` in this process: exit code, stdout and stderr together, warnings."""
    from cnnkit.cli import main

    check.log.note("$ cnnkit " + shlex.join(argv))
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, redirect_stdout(out), \
            redirect_stderr(out):
        warnings.simplefilter("always")
        code = main(list(argv))
    messages = [str(w.message) for w in caught]
    check.log.note(out.getvalue() + "".join(f"warning: {m}\n" for m in messages)
                   + f"exit {code}")
    return code, out.getvalue(), messages


def train(check: Check, name: str, config: str | Path, *sets: str, tiny: bool = True
          ) -> Trained:
    """`cnnkit train CONFIG --quiet` into WORK/runs/NAME on the check's device (a dry run's
    digits cut to DIGITS where `tiny`)."""
    out = check.work / "runs" / name
    sets = (f"train.device={check.device}", *(DIGITS if check.dry and tiny else ()), *sets)
    start = time.perf_counter()
    code, text, caught = cnnkit(check, "train", str(config), "--out", str(out), "--quiet",
                                *[arg for s in sets for arg in ("--set", s)])
    run = Trained(code, text, caught, out, time.perf_counter() - start)
    if (out / "metrics.csv").is_file():
        with open(out / "metrics.csv", newline="") as f:
            run.rows = list(csv.DictReader(f))
    if (out / "train.log").is_file():
        run.log = (out / "train.log").read_text(errors="replace")
    return run


def child(check: Check, command: list[str], timeout: float) -> tuple[int | None, list[str]]:
    """A child process from the repository root, its lines streamed to the log; killed with
    its whole process group past `timeout` (exit code None)."""
    check.log.say("  $ " + shlex.join(command))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    if check.facts.get("cublas_set"):  # ours, for train.deterministic in this process only
        env.pop("CUBLAS_WORKSPACE_CONFIG", None)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True, env=env)
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            check.log.say("  | " + lines[-1])

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    reader.join(5)
    return code, lines


def schema_keys() -> dict[str, typing.Any]:
    """Every config key cnnkit's schema declares, as its dotted path -> its type."""
    import dataclasses

    from cnnkit.schema import Config

    found: dict[str, typing.Any] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")
            else:
                found[prefix + f.name] = kind

    walk(Config, "")
    return found


def literals(kind: typing.Any) -> list:
    """The values a Literal (inside Optional or a union too) allows."""
    if typing.get_origin(kind) is typing.Literal:
        return list(typing.get_args(kind))
    return [v for arg in typing.get_args(kind) for v in literals(arg)]


# ---------------------------------------------------------------- the steps

def machine(check: Check, timeout: float) -> tuple[str, str]:
    import torch
    import torchvision

    try:
        import timm
        extras = f"timm {timm.__version__}"
    except ImportError:
        extras = "timm absent (bench.py's timm rows are left out)"
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check.facts["gpus"] = gpus
    parts = [f"torch {torch.__version__}", f"CUDA {torch.version.cuda or 'none'}",
             f"cuDNN {torch.backends.cudnn.version() or 'none'}",
             f"torchvision {torchvision.__version__}", extras,
             f"python {platform.python_version()}", f"{os.cpu_count()} CPUs",
             f"cnnkit at {_commit()}"]
    if gpus:
        props = torch.cuda.get_device_properties(0)
        parts[:0] = [f"{gpus} × {props.name} ({props.total_memory / 2**30:.0f} GiB, "
                     f"sm_{props.major}{props.minor})", f"driver {_driver()}"]
    if check.dry:
        return "pass", "device cpu (dry run), " + ", ".join(parts)
    if not gpus:
        check.facts["blocked"] = "no CUDA device (see the machine step)"
        return "fail", "torch sees no CUDA device (" + ", ".join(parts) + "); on a machine " \
                       "without one run scripts/gpu_check.sh --cpu-dry-run"
    return "pass", ", ".join(parts)


def _driver() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20)
        return done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() \
            else "unknown (nvidia-smi failed)"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (no nvidia-smi)"


def _commit() -> str:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "an unknown commit (no git)"
    return done.stdout.strip() if done.returncode == 0 else "an unknown commit (no .git)"


def cuda_tests(check: Check, timeout: float) -> tuple[str, str]:
    """tests/test_cuda.py and every test marked `cuda`, in the files that use the mark."""
    files = sorted({"tests/test_cuda.py", *(f"tests/{p.name}" for p in
                                            (ROOT / "tests").glob("test_*.py")
                                            if "mark.cuda" in p.read_text())})
    code, lines = child(check, [check.python, "-m", "pytest", *files, "-m", "cuda",
                                "-rs", "-p", "no:cacheprovider", "-n", "0" if check.dry else "2"],
                        timeout - 5)
    counts = {}
    for line in lines:
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", line)
        if found:
            counts = {kind: int(n) for n, kind in found}
    what = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "no summary line"
    if code is None:
        return "fail", f"timed out after {timeout - 5:.0f} s ({what})"
    if check.dry:
        ok = code == 0 and counts.get("skipped", 0) > 0 and not counts.get("passed")
        return ("pass" if ok else "fail"), f"{what} in {len(files)} files: without CUDA " \
                                           f"every cuda test skips (dry run)"
    ok = code == 0 and counts.get("passed", 0) > 0
    return ("pass" if ok else "fail"), f"{what} in {len(files)} files (pytest exit {code})"


def bench(check: Check, timeout: float) -> tuple[str, str]:
    """scripts/bench.py: the trainer against the hand loop (a), the classic pipeline (b),
    ResNet-50 at bf16 + channels_last against fp32 and timm, with the fraction of the bf16
    matmul peak (c), an epoch's FLOPs against the fp32 peak (e); its table to bench.md."""
    # a dry run: section c alone, its smallest (a and b on a CPU are tests/test_scripts.py's)
    sizes = (["--device", "cpu", "--sections", "c", "--repeats", "1", "--models", "resnet18",
              "--image-size", "32"] if check.dry else
             ["--device", "cuda", "--sections", "abce", "--repeats", "3", "--models",
              "resnet50"])
    code, lines = child(check, [check.python, "scripts/bench.py", *sizes, "--quick",
                                "--write", "--doc", str(check.work / "bench.md")], timeout - 5)
    rows = [line for line in lines if re.match(r"\[[a-e]\] ", line)]
    if code != 0:
        return "fail", (f"exit {code}" if code is not None
                        else f"timed out after {timeout - 5:.0f} s")

    def ratio(section: str, needle: str) -> float | None:
        row = next((r for r in rows if r.startswith(f"[{section}]") and needle in r), None)
        return float(re.search(r"-> ([\d.]+)x", row)[1]) if row else None

    same, timm = ratio("a", "same settings"), ratio("c", "cnnkit vs timm")
    peak = ratio("c", "channels_last: achieved")
    found = [f"{len(rows)} rows in bench.md"]
    found += [f"a: cnnkit / hand loop, same settings {same:.2f}× the time"] if same else []
    found += [f"c: cnnkit / timm {timm:.2f}× the images/s"] if timm else \
        ["c: no timm row (" + ("timm rows are CUDA's" if check.dry else "timm absent") + ")"]
    found += [f"c: cnnkit at {100 * peak:.0f} % of the matmul peak"] if peak else []
    return "pass", "; ".join(found)


def mnist_30(check: Check, timeout: float) -> tuple[str, str]:
    """The course's conv net, its config's 30 epochs, the digits held on the device."""
    run = train(check, "mnist_conv", "mnist_conv", *(["train.epochs=2"] if check.dry else []))
    if run.failed():
        return run.failed()
    check.facts["eager_epoch"] = run.warm()
    acc = run.last("val_acc")
    what = (f"{len(run.rows)} epochs in {run.wall:.1f} s wall ({sum(run.seconds()):.1f} s in "
            f"the epochs, {run.warm():.3f} s an epoch after the first), val_acc {acc:.4f}, "
            f"device {run.header(DEVICE)}, precision {run.header(PRECISION)}")
    if check.dry:
        return "pass", "dry run, 2 epochs of 200 digits: " + what
    return ("pass" if acc >= 0.95 else "fail"), what + ("" if acc >= 0.95 else " (< 0.95)")


# class folders: GPU sizes, then a dry run's; photos 375×500 as in issue 25's measurement
FOLDERS = {"cuda": dict(model="resnet50", per_class=256, val=32, shape=(375, 500), size=224,
                        batch=64, epochs=2, workers=min(8, os.cpu_count() or 1)),
           "cpu": dict(model="tiny", per_class=8, val=4, shape=(48, 64), size=32, batch=8,
                       epochs=1, workers=0)}
TINY_FOLDER_MODEL = """\
# a dry run's class-folder model: the data path is what is checked, not ResNet-50's FLOPs
model:
  layers: [[Conv2d, 3, 8, 3], [ReLU], [AdaptiveAvgPool2d, 1], [Flatten], [Linear, num_classes]]
  num_classes: auto
data:
  name: imagefolder
"""
NEW_KEYS = {  # issue 25's keys, by their last name: the value this step trains with
    "policy": None,  # a Literal: trivialaugment where offered (literals() picks)
    "random_erasing": 0.25, "mixup_alpha": 0.2, "cutmix_alpha": 1.0}


def folders(check: Check, timeout: float) -> tuple[str, str]:
    """One epoch (two on CUDA: the first pays cuDNN's autotuning and the workers' start) of a
    class-folder config with issue 25's augmentation, batch mixing and telemetry where they
    have landed, and whether the loader keeps the device fed."""
    sizes = FOLDERS[check.device]
    root = check.work / "photos"
    made = make_folders(check, root, sizes)
    keys, notes, sets = schema_keys(), [made], []
    for name, value in NEW_KEYS.items():
        path = next((k for k in keys if k.split(".")[-1] == name), None)
        if path is None:
            notes.append(f"{name}: not landed")
            continue
        if value is None:
            allowed = [v for v in literals(keys[path]) if v not in (None, "none", "off")]
            value = "trivialaugment" if "trivialaugment" in allowed else allowed[0]
        sets.append(f"{path}={value}")
    decode = next((k for k in keys if "decode" in k.split(".")[-1]), None)
    if decode is None:
        notes.append("GPU JPEG decoding: not landed")
    elif check.dry:
        notes.append(f"{decode}: GPU decoding needs CUDA (dry run)")
    else:
        offered = [v for v in literals(keys[decode]) if v in ("cuda", "gpu", "nvjpeg")]
        sets.append(f"{decode}={offered[0] if offered else 'true'}")
    workers, model = sizes["workers"], sizes["model"]
    if model == "tiny":
        model = check.work / "tiny_folders.yaml"
        model.write_text(TINY_FOLDER_MODEL)
    run = train(check, "folders", model, f"data.root={root}",
                f"data.image_size={sizes['size']}", f"data.workers={workers}",
                f"train.batch_size={sizes['batch']}", f"train.epochs={sizes['epochs']}",
                "train.lr=0.01", *sets, tiny=False)
    if run.failed():
        return run.failed()
    images = len(list((root / "train").glob("*/*")))
    seconds = run.seconds()[-1]
    busy = compute_only(check, model, sizes, root, steps=-(-images // sizes["batch"])) / seconds
    fed = "yes" if busy >= 0.8 else "no"
    notes[1:1] = [f"{sizes['model']} at {sizes['size']} px, workers {workers}, "
                  f"{' '.join(sets) or 'no issue 25 keys'}: epoch {len(run.rows)} "
                  f"{images / seconds:,.0f} img/s ({seconds:.2f} s); the same steps on a batch "
                  f"held on the device take {100 * busy:.0f} % of that: loader keeps it fed: "
                  f"{fed}", telemetry(run)]
    return "pass", "; ".join(notes)


def make_folders(check: Check, root: Path, sizes: dict) -> str:
    """Class folders from the photos a package ships (scripts/photo_folders.py, issue 25),
    else synthetic JPEGs as tests/imagefiles.py makes them; says which."""
    script = ROOT / "scripts" / "photo_folders.py"
    why = "scripts/photo_folders.py absent (issue 25)"
    if script.is_file():
        try:
            code = runpy.run_path(str(script), run_name="photo_folders")["main"](
                [str(root), "--train-per-class", str(sizes["per_class"]),
                 "--val-per-class", str(sizes["val"])])
            if not code and any((root / "train").glob("*/*")):
                classes = len(os.listdir(root / "train"))
                return f"photos from scripts/photo_folders.py in {classes} classes"
            why = f"scripts/photo_folders.py exited {code}"
        except (Exception, SystemExit) as exc:  # its argparse exits too: fall back, say why
            why = f"scripts/photo_folders.py failed ({type(exc).__name__}: {exc})"
    shutil.rmtree(root, ignore_errors=True)  # nothing half-made by the script stays
    synthetic_folders(root, sizes)
    return f"{why}: synthetic JPEG class folders instead"


def synthetic_folders(root: Path, sizes: dict) -> None:
    """2 classes of noisy textured JPEGs (warm and cool colours), photo-sized."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    height, width = sizes["shape"]
    for split, count in (("train", sizes["per_class"]), ("val", sizes["val"])):
        for name, color in (("warm", (200, 110, 50)), ("cool", (50, 110, 200))):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                blocks = rng.integers(-70, 70, (-(-height // 8), -(-width // 8), 3))
                pixels = np.kron(blocks, np.ones((8, 8, 1)))[:height, :width] + color
                pixels += rng.integers(-25, 25, pixels.shape)
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(
                    root / split / name / f"{i:04d}.jpg", quality=90)


def telemetry(run: Trained) -> str:
    """Issue 25's data-wait share, from metrics.csv or train.log, where it has landed."""
    column = next((k for k in (run.rows[-1] if run.rows else {}) if "wait" in k), None)
    if column is not None:
        return f"data-wait telemetry: {column} {run.rows[-1][column]}"
    lines = [line for line in run.log.splitlines() if "wait" in line.lower()]
    if lines:
        return "data-wait telemetry: " + lines[-1].split("  ", 1)[-1].strip()
    return "data-wait telemetry: not landed"


def compute_only(check: Check, model: str | Path, sizes: dict, root: Path, *, steps: int
                 ) -> float:
    """Seconds of `steps` SGD steps of the folder step's model on one batch held on the device,
    at the settings the trainer's `auto` picks (bf16 + channels_last on CUDA): the epoch's
    time with no wait for data."""
    import torch

    import cnnkit

    device = torch.device(check.device)
    model = cnnkit.build_model(model, overrides=(
        f"data.root={root}", f"data.image_size={sizes['size']}", "model.num_classes=2")
    ).to(device)
    x = torch.randn(sizes["batch"], 3, sizes["size"], sizes["size"], device=device)
    y = torch.randint(0, 2, (sizes["batch"],), device=device)
    if device.type == "cuda":
        model, x = model.to(memory_format=torch.channels_last), \
            x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):  # cuDNN's autotuning
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compile_step(check: Check, timeout: float) -> tuple[str, str]:
    import torch

    sets = ("train.compile=true", "train.epochs=1" if check.dry else "train.epochs=3")
    real = torch.compile
    if check.dry:  # inductor on a CPU needs a C++ toolchain and minutes: the identity instead
        torch.compile = lambda model=None, **kwargs: model
    try:
        run = train(check, "compile", "mnist_conv", *sets)
    finally:
        torch.compile = real
    failed = [w for w in run.warnings if "torch.compile failed" in w]
    if run.failed() or failed:
        return run.failed() or ("fail", failed[0])
    on = run.header(COMPILE)
    if check.dry:
        return ("pass" if on == "on" else "fail"), \
            f"stubbed on CPU: torch.compile replaced by the identity; train.compile=true " \
            f"ran through the trainer (header: compile {on})"
    later, eager = run.warm(), check.facts.get("eager_epoch")
    return ("pass" if on == "on" else "fail"), \
        f"compile {on}: {run.wall:.1f} s wall, compiling included; {later:.3f} s an epoch " \
        f"after the first" + (
            f" against eager's {eager:.3f} s ({eager / later:.2f}×)" if eager else "")


def amp(check: Check, timeout: float) -> tuple[str, str]:
    """bf16 autocast, and fp16 with loss scaling (GradScaler, its state saved in last.pt)."""
    from cnnkit.checkpoint import load_checkpoint

    parts, status = [], "pass"
    for precision in ("bf16", "fp16"):
        run = train(check, f"amp-{precision}", "mnist_conv", f"train.precision={precision}",
                    "train.epochs=1" if check.dry else "train.epochs=3")
        if run.failed():
            return run.failed()
        used, loss = run.header(PRECISION), run.last("train_loss")
        scaler = "scaler" in load_checkpoint(run.out / "last.pt") if used == "fp16" else None
        if used != precision and not check.dry or not math.isfinite(loss) or scaler is False:
            status = "fail"
        parts.append(f"{precision}: trained in {used}" + (
            ", GradScaler state in last.pt" if scaler else "") +
            f", train_loss {loss:.4f}, val_acc {run.last('val_acc'):.4f}")
    return status, "; ".join(parts)


def deterministic_step(check: Check, timeout: float) -> tuple[str, str]:
    """train.deterministic twice (the weights must match bit for bit) and once off: its cost."""
    import torch

    from cnnkit.checkpoint import load_checkpoint

    epochs = "train.epochs=2" if check.dry else "train.epochs=6"
    runs = [train(check, f"deterministic-{i}", "mnist_conv", "train.deterministic=true",
                  epochs) for i in (1, 2)]
    runs.append(train(check, "deterministic-off", "mnist_conv", epochs))
    for run in runs:
        if run.failed():
            return run.failed()
    a, b = (load_checkpoint(run.out / "last.pt")["model"] for run in runs[:2])
    same = all(torch.equal(a[k], b[k]) for k in a)
    on, off = runs[0].warm(), runs[2].warm()
    return ("pass" if same else "fail"), \
        f"two runs {'equal' if same else 'DIFFER'} bit for bit; an epoch {on:.3f} s against " \
        f"{off:.3f} s without: {on / off:.2f}× the time"


OOM_CONFIG = """\
# a real CUDA out-of-memory: digits upsampled 4× (112×112) through REPEAT convolutions of 64
# channels, batch 1000: each saves a 1000 × 64 × 112² bf16 activation for the backward pass
# (1.6 GB, under 2^31 values so that no kernel refuses it first), 190 GB in all, more than
# an H100's 80 or an H200's 141 (a dry run: 2 layers at 28×28, and a stand-in raises)
model:
  input: [1, 28, 28]
  layers:
    - [Upsample, {scale_factor: SCALE}]
    - [Conv2d, 1, 64, 3, {padding: 1}]
    - [Repeat, REPEAT, [Conv2d, 64, 64, 3, {padding: 1}]]
    - [AdaptiveAvgPool2d, 1]
    - [Flatten]
    - [Linear, 10]
data:
  name: mnist-sample
train:
  batch_size: 1000
  epochs: 1
"""


def oom(check: Check, timeout: float) -> tuple[str, str]:
    """The one line a CUDA out-of-memory gives (`cnnkit: error: ... ran out of memory ...`)."""
    import torch

    config = check.work / "oom.yaml"
    config.write_text(OOM_CONFIG.replace("SCALE", "1" if check.dry else "4")
                      .replace("REPEAT", "2" if check.dry else "120"))
    handle = None
    if check.dry:  # a stand-in raises what CUDA raises, at the first training forward
        def raise_oom(module, inputs):
            if module.training and torch.is_grad_enabled():
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.07 TiB "
                                             "(a stand-in raised on the CPU)")

        handle = torch.nn.modules.module.register_module_forward_pre_hook(raise_oom)
    try:
        run = train(check, "oom", config, "train.precision=auto")
    finally:
        if handle is not None:
            handle.remove()
    lines = [line for line in run.text.splitlines() if line.strip()]
    ok = (run.code == 2 and len(lines) == 1 and lines[0].startswith("cnnkit: error: ")
          and "out of memory" in lines[0])
    after = ""
    if not check.dry:
        torch.cuda.empty_cache()
        after = f"; afterwards {torch.cuda.memory_allocated() / 2**20:.0f} MiB allocated"
    stub = "stubbed on CPU (a forward pre-hook raises torch.OutOfMemoryError): " \
        if check.dry else ""
    return ("pass" if ok else "fail"), \
        f"{stub}exit {run.code}, {len(lines)} line(s): {lines[-1] if lines else ''}{after}"


def ddp(check: Check, timeout: float) -> tuple[str, str]:
    """2 processes under torchrun on 2 GPUs, each its own GPU (nccl)."""
    gpus = check.facts.get("gpus", 0)
    if check.dry or gpus < 2:
        return "skip", f"{gpus} CUDA device(s): DDP needs 2" + (
            " (the 2-process gloo run on CPU is tests/test_distributed.py::"
            "test_torchrun_command_trains)" if check.dry else "")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = check.work / "runs" / "ddp"
    code, lines = child(check, [check.python, "-m", "torch.distributed.run",
                                "--nproc_per_node=2", "--master_port", str(port), "-m",
                                "cnnkit", "train", "mnist_conv", "--out", str(out), "--set",
                                "train.device=cuda", "--set", "train.epochs=3"], timeout - 5)
    log = (out / "train.log").read_text() if (out / "train.log").is_file() else ""
    ok = code == 0 and "2 processes" in log
    return ("pass" if ok else "fail"), f"torchrun exit {code}; " + (
        "header: 2 processes" if "2 processes" in log else "no '2 processes' in train.log")


STEPS = [  # name, timeout on CUDA in seconds, function(check, timeout) -> (status, detail)
    ("machine", 60, machine),
    ("cuda-tests", 180, cuda_tests),
    ("bench", 180, bench),
    ("mnist-30", 90, mnist_30),
    ("folders", 150, folders),
    ("compile", 150, compile_step),
    ("amp", 90, amp),
    ("deterministic", 120, deterministic_step),
    ("oom", 60, oom),
    ("ddp", 150, ddp),
]


def step_line(index: int, total: int, entry: dict) -> str:
    return (f"[{index:>2}/{total}] {entry['name']:<14} {entry['status']:<4} "
            f"{entry['seconds']:7.1f} s  {entry['detail']}")


def run_step(check: Check, summary: Summary, name: str, fn, timeout: float) -> dict:
    """fn(check) -> (status, detail) under a watchdog: past `timeout` seconds the step is
    recorded as failed and this process ends itself (exit HUNG), whatever it is stuck in."""
    summary.record(name, "running", 0.0, f"started, timeout {timeout:.0f} s")
    start = time.perf_counter()
    done, lock = threading.Event(), threading.Lock()

    def watchdog() -> None:
        if done.wait(timeout):
            return
        with lock:
            if done.is_set():
                return
            entry = summary.record(name, "fail", time.perf_counter() - start,
                                   f"hung: no end within its {timeout:.0f} s timeout; the "
                                   f"driver ended itself and the shell resumes after it")
            check.log.say(step_line(0, 0, entry))
            os._exit(HUNG)

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        status, detail = fn(check, timeout)
    except Exception as exc:  # a step's failure is a line of the report, not the end of it
        check.log.note(traceback.format_exc())
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        status, detail = "fail", f"{type(exc).__name__}: {first}"
    with lock:
        done.set()
        assert status in STATUSES, status
        return summary.record(name, status, time.perf_counter() - start, detail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="every step on the CPU with stand-ins and tiny sizes")
    parser.add_argument("--work", type=Path, required=True, metavar="DIR",
                        help="the temporary folder: run directories, gpu_check.log, "
                             "gpu_check.json, bench.md")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the steps gpu_check.json in --work has not recorded "
                             "(a step still marked running hung: it is recorded as failed)")
    parser.add_argument("--steps", nargs="+", metavar="NAME", choices=[s[0] for s in STEPS],
                        help=f"only these steps (default: all: {' '.join(s[0] for s in STEPS)})")
    parser.add_argument("--budget", type=float, metavar="S",
                        help="seconds for the whole check, restarts included (default: 540 "
                             "on CUDA, 300 in a dry run); a step gets at most what is left")
    args = parser.parse_args(argv)
    mode = "cpu-dry-run" if args.cpu_dry_run else "cuda"
    budget = args.budget or (300.0 if args.cpu_dry_run else 540.0)
    args.work.mkdir(parents=True, exist_ok=True)
    log = Log(args.work / "gpu_check.log")
    summary = Summary(args.work / "gpu_check.json", mode=mode, budget=budget,
                      resume=args.resume)
    for entry in summary.data["steps"]:
        if entry["status"] == "running":  # the outer timeout killed the driver inside it
            summary.record(entry["name"], "fail", summary.elapsed(),
                           "hung: the driver was killed inside this step; resumed after it")
    check = Check(dry=args.cpu_dry_run, work=args.work, log=log, python=sys.executable,
                  facts=summary.data.setdefault("facts", {}))
    if "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        # train.deterministic's cuBLAS setting, before this process's first CUDA matmul (the
        # trainer sets it too, too late in a process that ran other steps first); children
        # start without it (child())
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        check.facts["cublas_set"] = True
    log.say(f"gpu_check ({mode}) in {args.work}, budget {budget:.0f} s"
            + (f", resumed at {summary.elapsed():.0f} s" if args.resume else ""))
    chosen = [s for s in STEPS if not args.steps or s[0] in args.steps]
    for index, (name, timeout, fn) in enumerate(chosen, 1):
        if name in summary.steps():  # done before a restart
            continue
        left = budget - summary.elapsed()
        if left < 10:
            entry = summary.record(name, "skip", 0.0, f"out of time: the {budget:.0f} s "
                                                      f"budget is spent")
        elif check.facts.get("blocked"):
            entry = summary.record(name, "skip", 0.0, check.facts["blocked"])
        else:
            entry = run_step(check, summary, name, fn, min(timeout, left))
        log.say(step_line(index, len(chosen), entry))
    return report(summary, chosen, log)


def report(summary: Summary, chosen: list, log: Log) -> int:
    """The table of every step, the total time; exit 1 where a step failed."""
    steps = summary.steps()
    log.say(f"\nsummary ({summary.data['mode']}, {summary.elapsed():.0f} s in all):")
    log.say(f"{'step':<14} {'status':<6} {'seconds':>8}  detail")
    for name, *_ in chosen:
        entry = steps[name]
        log.say(f"{name:<14} {entry['status']:<6} {entry['seconds']:>6.1f} s  {entry['detail']}")
    summary.data["total_s"] = round(summary.elapsed(), 1)
    summary.data["done"] = True
    summary.save()
    return 1 if any(steps[name]["status"] == "fail" for name, *_ in chosen) else 0


if __name__ == "__main__":
    sys.exit(main())
