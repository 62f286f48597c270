"""`cnnkit summary`: every layer with its state_dict path, type, output shape and parameters,
and its receptive field and jump in input pixels (cnnkit.geometry.receptive)."""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnkit.geometry.receptive import GLOBAL, Field, path_fields
from cnnkit.models.blocks import AuxHead
from cnnkit.models.builder import Network, format_shape

# the layers a paper counts in a network's depth: VGG19's 19, ResNet-50's 50 (+4 shortcuts)
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def summarize(model: Network) -> dict[str, Any]:
    """The summary as plain data: what `--json` prints."""
    modules = dict(model.named_modules())
    layers = []
    fields = _fields(model, [modules.get(info.name) for info in model.layers_info])
    for info, field in zip(model.layers_info, fields):
        module = modules.get(info.name)
        params = sum(p.numel() for p in module.parameters()) if module is not None else 0
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad) \
            if module is not None else 0
        layers.append({"name": info.name, "type": info.type,
                       "output_shape": list(info.output_shape), "params": params,
                       "trainable_params": trainable, "frozen": params > 0 and trainable == 0,
                       "receptive_field": _per_axis(field, "rf"),
                       "jump": _per_axis(field, "jump")})
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weight_layers = sum(isinstance(m, WEIGHT_LAYERS) for m in model.modules())
    return {"input_shape": list(model.input_shape), "layers": layers,
            "total_params": total, "trainable_params": trainable, "weight_layers": weight_layers}


def _fields(model: Network, modules: list) -> list[tuple[Field, ...] | None]:
    """Along each spatial axis of the input (none for a flat input); aux heads are taps."""
    axes = len(model.input_shape) - 1  # (C, H, W): 2; (C, L): 1; (F,): 0
    if axes == 0:
        return [None] * len(modules)
    taps = [i for i, m in enumerate(modules) if isinstance(m, AuxHead)]
    shapes, previous = [], tuple(model.input_shape)
    for i, info in enumerate(model.layers_info):
        shapes.append(previous)
        previous = previous if i in taps else tuple(info.output_shape)
    resolved = [_fixed_window(m, shape, info.output_shape) if m is not None else nn.Identity()
                for m, shape, info in zip(modules, shapes, model.layers_info)]
    return path_fields(resolved, axes=axes, taps=taps)


_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_FIXED_POOLS = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _fixed_window(module: nn.Module, in_shape: tuple, out_shape: tuple) -> nn.Module:
    """An adaptive pool whose output size divides its input size (C×H×W -> C×H'×W') is a
    plain pool with kernel = stride = H/H': AlexNet's AdaptiveAvgPool2d(6) on its 6×6 maps
    is the identity, not a global pool. Other adaptive pools stay global (receptive.py)."""
    in_sizes, out_sizes = in_shape[1:], tuple(out_shape)[1:]
    if (not isinstance(module, _ADAPTIVE) or len(in_sizes) != len(out_sizes)
            or len(in_sizes) not in _FIXED_POOLS or set(out_sizes) == {1}
            or any(n % m for n, m in zip(in_sizes, out_sizes))):
        return module
    if in_sizes == out_sizes:
        return nn.Identity()
    return _FIXED_POOLS[len(in_sizes)](tuple(n // m for n, m in zip(in_sizes, out_sizes)))


def _per_axis(fields: tuple[Field, ...] | None, key: str) -> list[int] | str | None:
    """[height, width] in input pixels; "global" (the whole input); None: not modelled."""
    if fields is None:
        return None
    values = [getattr(field, key) for field in fields]
    return GLOBAL if None in values else values


def _format_field(value: list[int] | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return str(value[0]) if len(set(value)) == 1 else "×".join(map(str, value))


def format_summary(summary: dict[str, Any], *, title: str = "") -> str:
    """A Keras-style table; with frozen layers (train.freeze), a Trainable column too."""
    rows = [(row["name"], row["type"], format_shape(row["output_shape"]), f"{row['params']:,}",
             _format_field(row["receptive_field"]), _format_field(row["jump"]))
            for row in summary["layers"]]
    header = ("Layer (state_dict path)", "Type", "Output shape", "Params", "RF", "Jump")
    if summary["trainable_params"] < summary["total_params"]:
        header += ("Trainable",)
        rows = [(*r, _trainable(row)) for r, row in zip(rows, summary["layers"])]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]),
                          *(cell.rjust(width) for cell, width in zip(cells[2:], widths[2:]))])

    rule = "─" * len(line(header))
    total, trainable = summary["total_params"], summary["trainable_params"]
    out = [title] if title else []
    out += [f"Input: {format_shape(summary['input_shape'])}", rule, line(header), rule]
    out += [line(r) for r in rows]
    out += [rule, f"Total params:         {total:,}", f"Trainable params:     {trainable:,}",
            f"Non-trainable params: {total - trainable:,}"]
    if "weight_layers" in summary:
        out.append(f"Weight layers:        {summary['weight_layers']} (convolution and linear)")
    out.append("RF: receptive field; Jump: distance between neighbouring units; in input pixels")
    return "\n".join(out)


def _trainable(row: dict[str, Any]) -> str:
    if row["params"] == 0:
        return ""
    if row["trainable_params"] == row["params"]:
        return "yes"
    return "no" if row["trainable_params"] == 0 else "partly"
