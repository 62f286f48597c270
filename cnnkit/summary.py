"""`cnnkit summary`: every layer with its state_dict path, type, output shape and parameters."""

from __future__ import annotations

from typing import Any

from cnnkit.builder import Network, format_shape


def summarize(model: Network) -> dict[str, Any]:
    """The summary as plain data: what `--json` prints."""
    modules = dict(model.named_modules())
    layers = []
    for info in model.layers_info:
        module = modules.get(info.name)
        params = sum(p.numel() for p in module.parameters()) if module is not None else 0
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad) \
            if module is not None else 0
        layers.append({"name": info.name, "type": info.type,
                       "output_shape": list(info.output_shape), "params": params,
                       "trainable_params": trainable, "frozen": params > 0 and trainable == 0})
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"input_shape": list(model.input_shape), "layers": layers,
            "total_params": total, "trainable_params": trainable}


def format_summary(summary: dict[str, Any], *, title: str = "") -> str:
    """A Keras-style table; with frozen layers (train.freeze), a Trainable column too."""
    rows = [(row["name"], row["type"], format_shape(row["output_shape"]), f"{row['params']:,}")
            for row in summary["layers"]]
    header = ("Layer (state_dict path)", "Type", "Output shape", "Params")
    if summary["trainable_params"] < summary["total_params"]:
        header += ("Trainable",)
        rows = [(*r, _trainable(row)) for r, row in zip(rows, summary["layers"])]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]),
                          cells[2].rjust(widths[2]), cells[3].rjust(widths[3]),
                          *(c.rjust(w) for c, w in zip(cells[4:], widths[4:]))]).rstrip()

    rule = "─" * len(line(header))
    total, trainable = summary["total_params"], summary["trainable_params"]
    out = [title] if title else []
    out += [f"Input: {format_shape(summary['input_shape'])}", rule, line(header), rule]
    out += [line(r) for r in rows]
    out += [rule, f"Total params:         {total:,}", f"Trainable params:     {trainable:,}",
            f"Non-trainable params: {total - trainable:,}"]
    return "\n".join(out)


def _trainable(row: dict[str, Any]) -> str:
    if row["params"] == 0:
        return ""
    if row["trainable_params"] == row["params"]:
        return "yes"
    return "no" if row["trainable_params"] == 0 else "partly"
