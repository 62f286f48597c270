"""The package face: `import cnnkit` and `cnnkit --help` stay light; the public names resolve
on first use to the functions they name."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

import cnnkit
from tests.conftest import ROOT

HEAVY = ("torch", "torchvision", "numpy", "matplotlib", "tqdm", "yaml", "PIL")

AFTER_HELP = """
import contextlib, io, json, sys
from cnnkit.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["--help"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
AFTER_IMPORT = """
import json, sys
import cnnkit
print(json.dumps({"code": 0, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("script", [AFTER_HELP, AFTER_IMPORT], ids=["help", "import"])
def test_the_face_imports_nothing_heavy(script):
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    report = json.loads(run.stdout)
    assert report["code"] == 0
    loaded = {name.partition(".")[0] for name in report["modules"]}
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))
    ours = {name for name in report["modules"] if name.startswith("cnnkit")}
    ours -= {name for name in ours if name.startswith("cnnkit.cli.")}  # the command modules
    assert ours <= {"cnnkit", "cnnkit.cli", "cnnkit.errors"}


def test_version_comes_from_the_installed_metadata(cli):
    version = importlib.metadata.version("cnnkit")
    assert cli("--version") == (0, f"cnnkit {version}\n", "")
    assert cnnkit.__version__ == version
    from cnnkit.version import version as read  # what checkpoints and run manifests record

    assert read() == version


def test_version_without_metadata_says_unknown(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    from cnnkit.version import version

    assert version.__wrapped__() == "0+unknown"  # past the cache of the real read


def test_public_names_resolve_to_their_functions():
    from cnnkit.config import load_config
    from cnnkit.models.builder import build_model
    from cnnkit.training.trainer import train

    assert (cnnkit.train, cnnkit.build_model, cnnkit.load_config) == (
        train, build_model, load_config)
    assert callable(cnnkit.train)  # the function, not the `training` subpackage
    assert set(cnnkit.__all__) <= set(dir(cnnkit))
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        cnnkit.trian  # noqa: B018
