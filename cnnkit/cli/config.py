"""`cnnkit config`."""

from __future__ import annotations

import argparse
import difflib

from cnnkit.cli import HelpFormatter
from cnnkit.errors import ConfigError

EPILOG = """examples:
  cnnkit config resnet18 > my_resnet.yaml
  cnnkit train my_resnet.yaml --set data.root=PHOTOS"""


def run(args: argparse.Namespace) -> int:
    from cnnkit.config import shipped_configs

    configs = shipped_configs()
    name = args.name.removesuffix(".yaml")
    if name not in configs:
        close = difflib.get_close_matches(name, list(configs), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{args.name}: no config of that name ships with cnnkit{hint} "
                          f"(valid: {', '.join(configs)})")
    print(configs[name].read_text(encoding="utf-8"), end="")
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "config", parents=[common], help="print a shipped config, to copy and edit",
        description="Print one of the configs that ship with cnnkit, comments included, "
                    "to copy and edit (`cnnkit configs` lists them).",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("name", metavar="NAME", help="a shipped config's name, e.g. resnet18")
    return p
