"""How a step runs on its device: precision (autocast, GradScaler), memory format, cuDNN
autotuning and torch.compile. The trainer asks for a `Speed` once and uses it in the loop;
`cnnkit eval` asks for the same one, so that it scores as the final validation did.

Defaults per device are the fastest sound ones measured by `scripts/bench.py`
(docs/BENCHMARKS.md): on CUDA bf16 autocast and channels_last; on CPU float32 (CPU bf16
autocast measured several times slower on AVX2 CPUs without AMX) and channels_last for conv
nets (oneDNN's NHWC kernels; mostly faster for the course's conv net, see BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class SpeedWarning(UserWarning):
    """A speed setting could not be honoured on this machine; training goes on without it."""


@dataclass
class Speed:
    """The resolved settings for one device."""

    device: torch.device
    precision: str  # fp32, bf16 or fp16 (never auto)
    channels_last: bool
    scaler: torch.amp.GradScaler | None  # fp16 only: loss scaling against underflow

    @classmethod
    def plain(cls, device: torch.device) -> Speed:
        """fp32, NCHW: what a loop without any settings does."""
        return cls(device, "fp32", False, None)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.precision])

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory format the model's weights use (N, C, H, W either way)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, *,
                      before_step: Callable[[], None] | None = None) -> None:
        """Backward, then `before_step()` on true-scale gradients (clipping), then step."""
        if self.scaler is None:
            loss.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if before_step is not None:
            self.scaler.unscale_(optimizer)  # clip the gradients, not the scaled ones
            before_step()
        self.scaler.step(optimizer)  # skips the step where gradients overflowed
        self.scaler.update()


def resolve_speed(device: torch.device, *, precision: str = "fp32",
                  channels_last: str | bool = False, model: nn.Module | None = None) -> Speed:
    """Turn `train.precision` and `train.channels_last` (their values checked by the schema's
    types) into settings that work on `device`."""
    chosen = _pick_precision(device) if precision == "auto" else precision
    if chosen != "fp32" and not precision_works(device, chosen):
        warnings.warn(f"train.precision: {chosen} autocast does not run on {device}; "
                      f"training in fp32", SpeedWarning, stacklevel=2)
        chosen = "fp32"
    conv = model is None or has_conv2d(model)
    if channels_last == "auto":
        use_nhwc = conv and device.type in ("cuda", "cpu")
    else:
        use_nhwc = bool(channels_last) and conv
    scaler = torch.amp.GradScaler(device.type) if chosen == "fp16" else None
    if device.type == "cuda":
        # Fixed shapes (all batches but the last) let cuDNN time its algorithms once and keep
        # the fastest: a one-off cost of a few steps.
        torch.backends.cudnn.benchmark = True
    return Speed(device, chosen, use_nhwc, scaler)


@contextlib.contextmanager
def deterministic(on: bool = True):
    """`train.deterministic`: PyTorch's deterministic algorithms (an op that has none raises,
    naming itself) and cuDNN without autotuning or nondeterministic kernels, so a run repeats
    bit for bit on the same GPU and build. The process's settings come back afterwards.

    cuBLAS needs CUBLAS_WORKSPACE_CONFIG before its first use; set here where it is not set,
    which is in time when no CUDA matmul ran earlier in the process."""
    if not on:
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.benchmark,
             cudnn.deterministic)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    cudnn.benchmark, cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.benchmark, cudnn.deterministic = saved[2], saved[3]


def _pick_precision(device: torch.device) -> str:
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def precision_works(device: torch.device, precision: str) -> bool:
    """Whether a conv and a matmul run under this autocast dtype on this device."""
    if precision == "fp32":
        return True
    try:
        with torch.autocast(device.type, dtype=DTYPES[precision]):
            x = torch.ones(1, 1, 4, 4, device=device)
            conv = torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3, device=device))
            conv.flatten(1) @ torch.ones(4, 2, device=device)
    except (RuntimeError, TypeError, AssertionError):
        return False
    return True


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, speed: Speed) -> nn.Module:
    """The model in the memory format the settings ask for (in place, returned for chaining)."""
    if speed.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def compile_model(model: nn.Module, trial: Callable[[nn.Module], None]) -> nn.Module:
    """`torch.compile(model)`, or the model itself with a warning where compiling fails.

    Compilation is lazy, so `trial(compiled)` runs one step to make it happen here rather
    than mid-epoch; the RNGs and the model's buffers (BatchNorm's running statistics) are put
    back afterwards so the trial leaves no trace in the run."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        compiled = torch.compile(model)
        with torch.random.fork_rng(devices=devices):
            trial(compiled)
    except Exception as exc:  # dynamo/inductor raise many kinds: no compiler, no triton, ...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        warnings.warn(f"train.compile: torch.compile failed ({type(exc).__name__}: {first}); "
                      f"training eagerly", SpeedWarning, stacklevel=2)
        compiled = model
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        for p in model.parameters():
            p.grad = None
    return compiled
