"""Pictures of a trained network: its conv filters, the feature maps it computes for an
image, and the saliency of the image for its top class (matplotlib's OO API, Agg).

Every picture has a size fixed by its grid, so it is the same on every machine:
``TILE_IN`` inches per tile at ``DPI``, plus ``MARGIN_IN`` around the grid for the title and
the colour bar (``figure_size``). Big layers are cut to ``MAX_GRID`` tiles, or ``MAX_TILES``
filters × ``MAX_TILES`` channels, and the title says how many are shown.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.infer.model import load_predictor
from cnnkit.infer.predict import Predictor
from cnnkit.rundir import refuse_run_file
from cnnkit.tasks import Task, main_logits
from cnnkit.training.curves import save_figure

DPI = 100  # as cnnkit.training.curves.save_figure writes
TILE_IN = 0.6  # inches per grid tile: 60 px at DPI
MARGIN_IN = (1.6, 0.8)  # (width, height) around the grid: colour bar, title, padding
MAX_TILES = 32  # filters (down) and input channels (across) in a per-channel filter grid
MAX_GRID = 256  # tiles in a near-square grid (16×16); the title says when some are cut
SALIENCY_SIZE_IN = (10.0, 3.6)  # input | saliency | saliency over the input


def load_network(path: str | Path) -> Predictor:
    """The checkpoint's (or run directory's) predictor on the CPU: model, preprocessing,
    class names."""
    return load_predictor(path, device="cpu")


def read_image(path: str | Path, predictor: Predictor) -> torch.Tensor:
    """An image file as the model's input, (1, C, H, W) float, prepared as `cnnkit predict`
    prepares it: by the checkpoint's preprocessing record. MNIST digits are white on black;
    a photographed black-on-white digit needs inverting first."""
    return predictor.inputs([Path(path)])


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Every Conv2d by its state_dict path, in registration order (blocks included)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def pick_conv(model: nn.Module, layer: str | None, *, source: str = "model"
              ) -> tuple[str, nn.Conv2d]:
    """The conv layer named `layer`, or the first; an unknown name lists the valid ones."""
    convs = conv_layers(model)
    if not convs:
        raise CnnkitError(f"{source}: the model has no Conv2d layers to show")
    if layer is None:
        return next(iter(convs.items()))
    if layer not in convs:
        raise CnnkitError(f"--layer {layer}: not a conv layer of {source} "
                          f"(valid: {', '.join(convs)})")
    return layer, convs[layer]


def figure_size(rows: int, cols: int) -> tuple[float, float]:
    """Inches of a grid picture of rows × cols tiles (pixels: times DPI)."""
    return cols * TILE_IN + MARGIN_IN[0], rows * TILE_IN + MARGIN_IN[1]


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for n tiles: 8 -> (3, 3), 16 -> (4, 4), 6 -> (2, 3)."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def plot_filters(model: nn.Module, path: str | Path, *, layer: str | None = None,
                 source: str = "model") -> Path:
    """A conv layer's weights as a PNG grid: an RGB tile per filter for 3-channel filters,
    otherwise one tile per (filter, input channel), filters down and channels across (a
    single input channel: a near-square grid of filters)."""
    name, conv = pick_conv(model, layer, source=source)
    weight = conv.weight.detach().float().cpu().numpy()  # (F, C/groups, kh, kw)
    n_filters, n_channels = weight.shape[:2]
    shown = weight[:MAX_GRID if n_channels in (1, 3) else MAX_TILES, :MAX_TILES]
    if n_channels == 3:
        tiles = [_unit_range(w.transpose(1, 2, 0)) for w in shown]  # (kh, kw, 3) in [0, 1]
        rows, cols = grid_shape(len(tiles))
        fig = _grid_figure(tiles, rows, cols, cmap=None, symmetric=False)
    else:
        tiles = list(shown.reshape(-1, *shown.shape[2:]))  # (F*C, kh, kw), filter-major
        rows, cols = grid_shape(len(tiles)) if n_channels == 1 else shown.shape[:2]
        fig = _grid_figure(tiles, rows, cols, cmap="RdBu_r", symmetric=True, label="weight")
    kernel = "×".join(map(str, weight.shape[2:]))
    fig.suptitle(f"{name}: {_count(len(shown), n_filters, 'filter')} × "
                 f"{_count(shown.shape[1], n_channels, 'input channel')}, {kernel}")
    return _save(fig, path)


def feature_maps(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What every conv layer outputs for x (1, C, H, W), by layer path: (1, F, H', W') each."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(_keep(outputs, name))
             for name, m in conv_layers(model).items()]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def plot_activations(model: nn.Module, x: torch.Tensor, out_dir: str | Path) -> list[Path]:
    """For one image (1, C, H, W), the output of every conv layer as a PNG grid of its feature
    maps, one file per layer: OUT_DIR/<layer path>.png (layer_<i>.png for a bare index)."""
    if not conv_layers(model):
        raise CnnkitError("the model has no Conv2d layers whose feature maps could be shown")
    outputs = feature_maps(model, x)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"{out_dir}: cannot create the folder ({exc.strerror})") from None
    return [_plot_maps(name, maps, out_dir / f"{_file_name(name)}.png")
            for name, maps in outputs.items()]


def saliency_map(model: nn.Module, x: torch.Tensor, *, task: Task | None = None
                 ) -> tuple[np.ndarray, int, float]:
    """|d score / d input| of the top class, max over channels (Simonyan et al. 2014):
    (H, W) map, the class index, its softmax probability. The task picks the class scores out
    of the output (localization: (1, 5 + K) -> (1, K)); None: the output is the class scores."""
    x = x.detach().clone().requires_grad_(True)
    logits = main_logits(model.eval()(x))  # (1, outputs)
    if task is not None:
        logits = task.class_scores(logits)  # (1, K)
    top = int(logits[0].argmax())
    (grad,) = torch.autograd.grad(logits[0, top], x)  # (1, C, H, W)
    probability = float(torch.softmax(logits.detach()[0], dim=0)[top])
    return grad[0].abs().amax(dim=0).numpy(), top, probability


def plot_saliency(model: nn.Module, x: torch.Tensor, path: str | Path, *,
                  mean: torch.Tensor, std: torch.Tensor, classes: list[str],
                  task: Task | None = None) -> Path:
    """The image beside its saliency for the top class, as a heat map over the image."""
    saliency, top, probability = saliency_map(model, x, task=task)
    image = (x[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C) in [0, 1]
    fig = Figure(figsize=SALIENCY_SIZE_IN, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, 3)
    gray = image.shape[2] == 1
    shown = image[..., 0] if gray else image
    for ax in axes:
        ax.set_axis_off()
    axes[0].imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=1)
    heat = axes[1].imshow(saliency, cmap="inferno")
    axes[2].imshow(shown, cmap="gray" if gray else None, vmin=0, vmax=1)
    axes[2].imshow(saliency, cmap="inferno", alpha=0.55)
    fig.colorbar(heat, ax=axes[1], shrink=0.8, label="|∂ score / ∂ pixel|")
    axes[0].set_title("input")
    axes[1].set_title(f"saliency of class {classes[top]!r}")
    axes[2].set_title(f"over the input (p = {probability:.2f})")
    return _save(fig, path)


def _plot_maps(name: str, maps: torch.Tensor, path: Path) -> Path:
    maps = maps[0].float().numpy()  # (F, H, W)
    shown = maps[:MAX_GRID]
    rows, cols = grid_shape(len(shown))
    fig = _grid_figure(list(shown), rows, cols, cmap="viridis", symmetric=False, label="activation")
    fig.suptitle(f"{name}: {_count(len(shown), len(maps), 'feature map')}, "
                 f"{maps.shape[1]}×{maps.shape[2]}")
    return _save(fig, path)


def _grid_figure(tiles: list[np.ndarray], rows: int, cols: int, *, cmap: str | None,
                 symmetric: bool, label: str = "") -> Figure:
    """One image of rows × cols tiles, 1-pixel gaps (shown blank), one shared colour scale."""
    height, width = tiles[0].shape[:2]
    depth = tiles[0].shape[2:]  # () or (3,)
    mosaic = np.full(((height + 1) * rows - 1, (width + 1) * cols - 1, *depth), np.nan)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        mosaic[r * (height + 1):r * (height + 1) + height,
               c * (width + 1):c * (width + 1) + width] = tile
    fig = Figure(figsize=figure_size(rows, cols), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    if depth:  # RGB tiles are already in [0, 1]; gaps become white
        ax.imshow(np.nan_to_num(mosaic, nan=1.0), interpolation="nearest")
        return fig
    high = float(np.nanmax(mosaic))
    low = float(np.nanmin(mosaic))
    if symmetric:  # weights: white at 0, red positive, blue negative
        low, high = -max(abs(low), abs(high)), max(abs(low), abs(high))
    image = ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=low, vmax=high or 1.0,
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    return fig


def _unit_range(tile: np.ndarray) -> np.ndarray:
    """Min-max scaled to [0, 1]; a constant tile becomes mid-gray."""
    low, high = tile.min(), tile.max()
    return np.full_like(tile, 0.5) if high == low else (tile - low) / (high - low)


def _keep(outputs: dict[str, torch.Tensor], name: str):
    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        outputs[name] = output.detach().clone()  # an in-place ReLU next would overwrite it

    return hook


def _count(shown: int, total: int, noun: str) -> str:
    plural = noun if total == 1 else noun + "s"
    return f"{total} {plural}" if shown == total else f"{shown} of {total} {plural}"


def _file_name(layer: str) -> str:
    """A layer path as a file name: 'features.0' stays, anything odd becomes '_'."""
    return "layer_" + layer if layer.isdigit() else re.sub(r"[^\w.-]", "_", layer)


def _save(fig: Figure, path: str | Path) -> Path:
    save_figure(fig, path)  # PNG at DPI, written atomically
    return Path(path)


def visualize(checkpoint: str | Path, kind: str, *, out: str | Path | None = None,
              layer: str | None = None, image: str | Path | None = None) -> list[Path]:
    """`cnnkit visualize`: draw `kind` (filters, activations, saliency) for a checkpoint;
    the files written. `out` defaults to DEFAULT_OUT[kind] in the working directory."""
    if kind not in DEFAULT_OUT:
        raise CnnkitError(f"visualize: unknown picture '{kind}' (valid: {', '.join(DEFAULT_OUT)})")
    predictor = load_network(checkpoint)
    model = predictor.model
    out = Path(DEFAULT_OUT[kind] if out is None else out)
    refuse_run_file(out, flag="--out")
    if kind == "filters":
        return [plot_filters(model, out, layer=layer, source=str(predictor.path))]
    if image is None:
        raise CnnkitError(f"visualize {kind}: needs --image IMAGE")
    x = read_image(image, predictor)
    if kind == "activations":
        return plot_activations(model, x, out)
    mean, std = (torch.tensor(predictor.preprocessing[k]).view(-1, 1, 1) for k in ("mean", "std"))
    return [plot_saliency(model, x, out, mean=mean, std=std, classes=predictor.classes,
                          task=predictor.task)]


def plot_confusion(matrix: list[list[int]], classes: list[str], path: str | Path, *,
                   title: str = "") -> Path:
    """The confusion matrix as a heat map: rows the true class, columns the predicted one,
    each cell's count written in it (up to 30 classes; past that the colours alone)."""
    return _save(confusion_figure(matrix, classes, title=title), path)


def confusion_figure(matrix: list[list[int]], classes: list[str], *, title: str = ""
                     ) -> Figure:
    counts = np.asarray(matrix)
    k = len(classes)
    side = min(4.0 + 0.45 * k, 30.0)  # inches: a readable cell up to ~60 classes
    fig = Figure(figsize=(side + 1.5, side), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    # the scale starts at 0: from the smallest cell, counts of 20 and 22 would look 0 and max
    image = ax.imshow(counts, cmap="Blues", interpolation="nearest", vmin=0,
                      vmax=max(1, int(counts.max()) if counts.size else 1))
    fig.colorbar(image, ax=ax, shrink=0.8, label="examples")
    ticks = range(k) if k <= 60 else []
    ax.set_xticks(list(ticks), [classes[i] for i in ticks], rotation=90)
    ax.set_yticks(list(ticks), [classes[i] for i in ticks])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= 30:
        high = counts.max() if counts.size else 0
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                    color="white" if n > high / 2 else "black")
    ax.set_title(title, fontsize=9)
    return fig


DEFAULT_OUT = {"filters": "filters.png", "activations": "activations", "saliency": "saliency.png"}
