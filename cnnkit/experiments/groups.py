"""Runs side by side: which config keys differ between runs, and runs that differ only by
seed, as one group (`cnnkit runs`' groups, `cnnkit plot`'s bands)."""

from __future__ import annotations

import json

from cnnkit.rundir.records import RunRecord

IGNORED_KEYS = ("out",)  # where a config says to write, not what it learns
SEED = "train.seed"


def differing_keys(records: list[RunRecord]) -> list[str]:
    """The config keys whose values are not the same in every run; a sweep member not
    started yet counts only with the keys its overrides set."""
    started = [r.values for r in records if r.config]
    planned = [r.values for r in records if not r.config]
    keys = list(dict.fromkeys(k for c in started + planned for k in c if k not in IGNORED_KEYS))
    _missing = object()

    def seen(key: str) -> set[str]:
        values = [c.get(key, _missing) for c in started] + [c[key] for c in planned if key in c]
        return {json.dumps(v, default=str, sort_keys=True) for v in values}

    return [k for k in keys if len(seen(k)) > 1]


def seed_groups(records: list[RunRecord], keys: list[str]) -> list[list[RunRecord]]:
    """Runs whose `keys` (the differing ones) agree except for train.seed, in first-seen
    order; a run alone is a group of one."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        values = record.values
        ident = json.dumps([values.get(k) for k in keys if k != SEED], default=str)
        groups.setdefault(ident if values else str(record.path), []).append(record)
    return list(groups.values())
