"""The configs that ship with cnnkit, each described in one row: `cnnkit configs`."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnkit.config import load_config, shipped_configs
from cnnkit.errors import CnnkitError
from cnnkit.models.builder import build_model


def describe(path: Path) -> dict:
    """name, task, parameters, input and description (the file's first comment line) of one
    config; the model is built on the meta device, with model.num_classes' fallback."""
    cfg = load_config(path)
    with torch.device("meta"):
        model = build_model(cfg)
    return {"name": path.stem, "task": cfg.task.name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "input": list(cfg.model.input), "description": first_comment(path)}


def first_comment(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").rstrip(" :,")
    return ""


def catalogue() -> list[dict]:
    rows = []
    for name, path in shipped_configs().items():
        try:
            rows.append(describe(path))
        except CnnkitError as exc:  # a broken shipped config is listed, not fatal
            rows.append({"name": name, "task": "?", "parameters": None, "input": None,
                         "description": f"cannot be built: {exc}"})
    return rows


def format_catalogue(rows: list[dict]) -> str:
    table = [("name", "task", "parameters", "input", "description")]
    for r in rows:
        size = "×".join(map(str, r["input"])) if r["input"] else "?"
        count = f"{r['parameters']:,}" if r["parameters"] is not None else "?"
        table.append((r["name"], r["task"], count, size, r["description"]))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = ["  ".join([*(c.rjust(w) if i == 2 else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row[:4], widths))), row[4]])
             for row in table]
    return "\n".join(lines)
