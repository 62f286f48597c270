"""`cnnkit configs`."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli import HelpFormatter

EPILOG = """examples:
  cnnkit configs
  cnnkit config resnet18 > my_resnet.yaml     # a copy to edit
  cnnkit train resnet18 --set data.root=PHOTOS --set data.image_size=128"""


def run(args: argparse.Namespace) -> int:
    from cnnkit.inspect.catalogue import catalogue, format_catalogue

    rows = catalogue()
    print(json.dumps(rows) if args.json else format_catalogue(rows))
    return 0


def register(sub, common, overrides) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "configs", parents=[common], help="list the configs that ship with cnnkit",
        description="List the configs that ship with cnnkit: name, task, parameters (with "
                    "model.num_classes' fallback where it is auto: 1000 for the ImageNet zoo, "
                    "10 for digits), input (C×H×W) and a one-line description. A name "
                    "works wherever a config file does: `cnnkit train resnet18`.",
        epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON list of rows instead of a table")
    return p
