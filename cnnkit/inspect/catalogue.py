"""The configs that ship with cnnkit, each described in one row: `cnnkit configs`.

Describing a config builds its model (on the meta device) to count parameters, and `import
torch` alone takes seconds; so the rows of the shipped configs are generated ahead of time
into configs/catalogue.json (`python -m cnnkit.inspect.catalogue`), each with the SHA-256 of
the YAML it describes. `cnnkit configs` reads that table and describes afresh only a config
whose bytes differ from the table's (an edited install); tests/test_package.py checks the
table against the configs.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from cnnkit.config import SHIPPED, load_config, shipped_configs
from cnnkit.errors import CnnkitError

TABLE = SHIPPED / "catalogue.json"
# a sentence ends at a full stop before a space or the end, not after "et al"
SENTENCE_END = re.compile(r"(?<!\bal)\.(?=\s|$)")
COMMANDS = ("cnnkit ", "python ")  # a comment line showing how to run the config


def describe(path: Path) -> dict:
    """name, task, parameters, input and description (the first sentence of the file's
    leading comment) of one config; the model is built on the meta device, with
    model.num_classes' fallback."""
    import torch

    from cnnkit.models.builder import build_model

    cfg = load_config(path)
    with torch.device("meta"):
        model = build_model(cfg)
    return {"name": path.stem, "task": cfg.task.name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "input": list(cfg.model.input), "description": first_sentence(path)}


def first_sentence(path: Path) -> str:
    """The first sentence of the comment the file starts with (lines joined), whole, up to
    any command shown in it."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.lstrip("#").strip()
        if not line.startswith("#") or text.startswith(COMMANDS):
            break
        lines.append(text)
    text = " ".join(lines)
    cut = [i for i in (text.find(f" {c}") for c in COMMANDS) if i >= 0]
    text = text[:min(cut)] if cut else text
    end = SENTENCE_END.search(text)
    return text[:end.end()] if end else text.rstrip(" :,")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _described(name: str, path: Path) -> dict:
    try:
        return describe(path)
    except CnnkitError as exc:  # a broken shipped config is listed, not fatal
        return {"name": name, "task": "?", "parameters": None, "input": None,
                "description": f"cannot be built: {exc}"}


def catalogue() -> list[dict]:
    """One row per shipped config: from the table generated ahead of time where the config's
    bytes match it, else described now."""
    try:
        known = {row["name"]: row for row in json.loads(TABLE.read_text(encoding="utf-8"))}
    except (OSError, ValueError, TypeError, KeyError):
        known = {}
    rows = []
    for name, path in shipped_configs().items():
        row = known.get(name)
        if row is None or row.get("sha256") != digest(path):
            row = {**_described(name, path), "sha256": digest(path)}
        rows.append({k: v for k, v in row.items() if k != "sha256"})
    return rows


def generate() -> str:
    """The table's text: every shipped config described now, with its digest."""
    rows = [{**_described(name, path), "sha256": digest(path)}
            for name, path in shipped_configs().items()]
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


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


if __name__ == "__main__":  # python -m cnnkit.inspect.catalogue: regenerate the table
    from cnnkit.atomic import atomic_write_text

    atomic_write_text(TABLE, generate())
    print(f"wrote {TABLE}")
