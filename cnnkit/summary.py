"""`cnnkit summary`: every layer with its state_dict path, type, output shape and parameters."""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnkit.builder import Network, format_shape

# the layers a paper counts in a network's depth: VGG19's 19, ResNet-50's 50 (+4 shortcuts)
WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def summarize(model: Network) -> dict[str, Any]:
    """The summary as plain data: what `--json` prints."""
    modules = dict(model.named_modules())
    layers = []
    for info in model.layers_info:
        module = modules.get(info.name)
        params = sum(p.numel() for p in module.parameters()) if module is not None else 0
        layers.append({"name": info.name, "type": info.type,
                       "output_shape": list(info.output_shape), "params": params})
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    weight_layers = sum(isinstance(m, WEIGHT_LAYERS) for m in model.modules())
    return {"input_shape": list(model.input_shape), "layers": layers,
            "total_params": total, "trainable_params": trainable, "weight_layers": weight_layers}


def format_summary(summary: dict[str, Any], *, title: str = "") -> str:
    """A Keras-style table."""
    rows = [(row["name"], row["type"], format_shape(row["output_shape"]), f"{row['params']:,}")
            for row in summary["layers"]]
    header = ("Layer (state_dict path)", "Type", "Output shape", "Params")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]),
                          cells[2].rjust(widths[2]), cells[3].rjust(widths[3])])

    rule = "─" * len(line(header))
    total, trainable = summary["total_params"], summary["trainable_params"]
    out = [title] if title else []
    out += [f"Input: {format_shape(summary['input_shape'])}", rule, line(header), rule]
    out += [line(r) for r in rows]
    out += [rule, f"Total params:         {total:,}", f"Trainable params:     {trainable:,}",
            f"Non-trainable params: {total - trainable:,}"]
    if "weight_layers" in summary:
        out.append(f"Weight layers:        {summary['weight_layers']} (convolution and linear)")
    return "\n".join(out)
