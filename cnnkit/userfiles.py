"""User files read safely, before anything trusts them: a regular file opened without
blocking (`open_regular`), and YAML (`safe_yaml`) with no Python tags, no duplicate keys and a
bounded size once aliases are expanded (`check_size`). Configs, run directories' config.yaml
and checkpoints' recorded configs all go through here."""

from __future__ import annotations

import os
import stat
import typing
from pathlib import Path
from typing import Any

import yaml

from cnnkit.errors import ConfigError

# a config is a few KB; these bound what a wrong file (a dataset, /dev/zero, a YAML bomb) costs.
# Aliases stay (a block anchored and reused is a fair config), counted written out: MAX_NODES
# values (the largest shipped config has under 1,000), MAX_DEPTH deep, none inside its anchor.
MAX_BYTES = 1_000_000
MAX_DEPTH = 100
MAX_NODES = 100_000


def open_regular(path: str | Path) -> typing.BinaryIO:
    """`path` opened for reading, refused unless it is a regular file. The open does not block
    (O_NONBLOCK: a FIFO with no writer would wait forever in a plain open); fstat then decides
    on the file actually opened. OSError as open's; IsADirectoryError for anything else."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(0, "not a regular file", str(path))
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (plain safe_load
    keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' at lines {seen[key]} and {line}",
                    key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def safe_yaml(text: str, *, where: str, source: str | None = None) -> Any:
    """One YAML document read safely: no Python tags, no duplicate keys, nesting at most
    MAX_DEPTH deep (counted on the parser's events first, which do not recurse; PyYAML's
    composer does, and a list nested 5,000 deep ends in a RecursionError), then on the value
    with aliases expanded (`check_size`). ConfigError `where: ...` (`source: ...` for a
    document that parses but is too large written out)."""
    try:
        loader = _Loader(text)
        try:
            depth = 0
            while loader.check_event():
                event = loader.get_event()
                if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                    depth += 1
                    if depth > MAX_DEPTH:
                        line = event.start_mark.line + 1
                        raise ConfigError(f"{where}: line {line}: nested more than {MAX_DEPTH} "
                                          f"levels deep")
                elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                    depth -= 1
        finally:
            loader.dispose()
        loader = _Loader(text)
        try:
            data = loader.get_single_data()  # aliases are shared objects: cheap to build
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {_yaml_problem(exc)}") from None
    check_size(data, where=source or where)
    return data


def check_size(data: Any, *, where: str) -> None:
    """Refuse a value that is larger written out than any config: one that holds itself (a
    recursive alias), nests past MAX_DEPTH, or has more than MAX_NODES values once shared
    parts (YAML aliases, a pickle's memo) are counted each time they appear. Each distinct
    list or dict is visited once (sizes memoized by id), so a billion laughs costs its bytes."""
    sizes: dict[int, tuple[int, int]] = {}  # id -> (values written out, depth)
    stack: list[tuple[Any, bool]] = [(data, False)]
    open_ids: set[int] = set()
    while stack:  # iterative post-order: nesting must not recurse here either
        node, done = stack.pop()
        children = [*node.values(), *node] if isinstance(node, dict) else node
        if done:
            open_ids.discard(id(node))
            parts = [sizes[id(c)] for c in children if isinstance(c, (dict, list, tuple))]
            count = 1 + len(children) - len(parts) + sum(n for n, _ in parts)
            depth = 1 + max((d for _, d in parts), default=0)
            if depth > MAX_DEPTH:
                raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep "
                                  f"(aliases expanded)")
            if count > MAX_NODES:
                raise ConfigError(f"{where}: more than {MAX_NODES:,} values with its aliases "
                                  f"expanded; a config is far smaller (an alias bomb?)")
            sizes[id(node)] = (count, depth)
            continue
        if not isinstance(node, (dict, list, tuple)) or id(node) in sizes:
            continue
        if id(node) in open_ids:
            raise ConfigError(f"{where}: a value contains itself (a recursive alias)")
        open_ids.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list, tuple)))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or _first_line(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return f"{where}{problem}"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
