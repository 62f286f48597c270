"""A class-folder run written before data.augment applied to class folders (issue 25) resumes
as it ran: with flips. Its config.yaml and last.pt say `hflip: false`, the digits' default
then, which class folders ignored."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from cnnkit.cli import main
from cnnkit.config import config_from_dict, load_config
from cnnkit.data.transforms import hflip_of
from tests.imagefiles import write_class_folders

# written by cnnkit at commit 45e5ab6, in a folder holding `folders` made by
# write_class_folders(Path("folders"), counts={"train": 4, "val": 2}) and cfg.yaml = this
# run's config (a 3->4 conv, ReLU, AdaptiveAvgPool2d 2, Linear 2; image_size 32, workers 0,
# sgd lr 0.1, batch 4, seed 0, cpu): PYTHONPATH=<45e5ab6 tree> python -m cnnkit train cfg.yaml
# --out run --quiet (best.pt and curves.png left out); straight_2_epochs.pt is the model of
# the same command with --out straight --set train.epochs=2
OLD_RUN = Path(__file__).parent / "fixtures" / "run_45e5ab6_folders"


def test_an_old_class_folder_run_resumes_with_its_flips(tmp_path, monkeypatch):
    """Epoch 2 resumed now equals epoch 2 of the old code run straight (images of 40x48 at
    32 px: no reduced decode, so the same crops and flips from the same draws)."""
    monkeypatch.chdir(tmp_path)
    write_class_folders(Path("folders"), counts={"train": 4, "val": 2})  # data.root: folders
    shutil.copytree(OLD_RUN, "run")
    assert main(["resume", "run", "--quiet", "--set", "train.epochs=2"]) == 0
    resumed = torch.load("run/last.pt", weights_only=False)["model"]
    straight = torch.load(OLD_RUN / "straight_2_epochs.pt", weights_only=True)
    assert resumed.keys() == straight.keys()
    # bit for bit at the fixture's 2 torch threads; other thread counts sum the gradients in
    # another order (1 thread: 1.5e-7 apart), while without the flips epoch 2 ends 8e-4 apart
    assert all(torch.allclose(resumed[k], straight[k], rtol=0, atol=1e-5) for k in straight)


def test_only_a_saved_config_of_then_is_read_so(tmp_path):
    saved = {"model": {"input": [3, 16, 16], "layers": []},
             "data": {"name": "imagefolder", "root": "d", "image_size": 16, "augment": {
                 "translate": 0.0, "rotate": 0.0, "scale": 0.0, "crop_padding": 0,
                 "elastic": 0.0, "elastic_sigma": 4.0, "hflip": False, "cutout": 0}}}
    assert hflip_of(config_from_dict(saved).data) is True
    written_now = {**saved, "data": {**saved["data"], "val_crop": None}}
    assert hflip_of(config_from_dict(written_now).data) is False
    asked = {**saved, "data": {**saved["data"], "augment": {"hflip": False}}}
    assert hflip_of(config_from_dict(asked).data) is False  # a user's choice stays
    config = tmp_path / "saved.yaml"
    config.write_text(yaml.safe_dump(saved))
    assert hflip_of(load_config(config).data) is True  # a run's config.yaml
    # an override stands as set (resume then refuses it: hflip is not a key it may change)
    assert hflip_of(load_config(config, ["data.augment.hflip=false"]).data) is False
    digits = {**saved, "data": {**saved["data"], "name": "mnist-sample", "root": None}}
    digits["model"] = {"input": [1, 28, 28], "layers": []}
    assert hflip_of(config_from_dict(digits).data) is False
