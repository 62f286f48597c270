"""Short names that stay distinct: labels of runs that share a folder name (`cnnkit plot`,
`cnnkit runs`), the column of a config key (`lr` for train.lr), and sweep members' folders."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

UNSAFE = re.compile(r"[^A-Za-z0-9._,=+\-\[\]]")  # what a folder name may hold besides these: _
LONGEST = 80  # characters of a run name before it is shortened with a hash


def distinct_tails(items: Sequence[Sequence[str]], *, sep: str = "/") -> list[str]:
    """Each item (a path's parts, a key's parts) by its shortest tail that no other item
    shares: runs/a/lr=0.1 and runs/b/lr=0.1 -> a/lr=0.1, b/lr=0.1; runs/x -> x; train.lr
    -> lr. Identical items keep their whole text."""
    tails = []
    for i, item in enumerate(items):
        others = [other for j, other in enumerate(items) if j != i]
        k = next((k for k in range(1, len(item) + 1)
                  if all(_tail(other, k) != _tail(item, k) for other in others)), len(item))
        tails.append(sep.join(_tail(item, k)))
    return tails


def _tail(parts: Sequence[str], k: int) -> tuple[str, ...]:
    return tuple(parts[-k:]) if k <= len(parts) else tuple(parts)


def key_columns(keys: Sequence[str]) -> list[str]:
    """Config key paths by their shortest distinct tails: train.lr, train.seed -> lr, seed."""
    return distinct_tails([key.split(".") for key in keys], sep=".")


def value_text(value: Any) -> str:
    """A config value as a name shows it: 0.001, true, null, [1,28,28]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def run_name(pairs: Sequence[tuple[str, Any]], *, digest_of: str = "") -> str:
    """`lr=0.001,batch_size=250,seed=0`: safe as one folder name (no `/`, no spaces); past
    LONGEST characters, its head and a hash of `digest_of` (the full overrides)."""
    name = UNSAFE.sub("_", ",".join(f"{k}={value_text(v)}" for k, v in pairs)) or "run"
    if len(name) <= LONGEST:
        return name
    return f"{name[:LONGEST - 9]}~{short_hash(digest_of or name)}"


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
