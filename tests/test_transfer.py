"""Transfer learning: pretrained weights in (files, checkpoints, torchvision's cache), a new
head, frozen parts that do not move, per-prefix learning rates, and the load report."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision.models as tvm

from cnnkit.config import config_from_dict, load_config
from cnnkit.data import DATASETS, Data, build_data
from cnnkit.data.tensors import Split
from cnnkit.errors import CheckpointError, ConfigError, DataError
from cnnkit.models.builder import build_model
from cnnkit.models.freeze import freeze_for_training
from cnnkit.models.weights import (
    Pretrained,
    dropped_aux_heads,
    head_paths,
    match,
    read_weights,
    strip_prefixes,
    with_pretrained_defaults,
)
from cnnkit.runtime.assemble import seed_everything
from cnnkit.training.optim import build_optimizer
from cnnkit.training.trainer import train
from tests.conftest import CONFIGS, SMALL_CONV

RESNET_FROZEN = ["conv1", "bn1", "layer1", "layer2", "layer3"]
TINY_CLASSES = 7  # ImageNet heads have 1000 outputs; the tiny set has 7 classes


def _tiny_rgb(cfg) -> Data:
    """14 train and 7 val random 3×64×64 images of 7 classes, from a fixed generator (the
    global RNG stays untouched, so model initialization matches a rebuild with the same seed)."""
    g = torch.Generator().manual_seed(1)

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8, generator=g)
        return Split(images, torch.arange(n) % TINY_CLASSES)

    classes = [f"class{k}" for k in range(TINY_CLASSES)]
    return Data({"train": split(14), "val": split(7)}, classes, (0.5,) * 3, (0.25,) * 3)


@pytest.fixture
def tiny_rgb(monkeypatch):
    monkeypatch.setitem(DATASETS, "tiny-rgb", _tiny_rgb)


def _save(state: dict, path) -> str:
    torch.save(state, path)
    return str(path)


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _fine_tune(config: str, weights: str, out, freeze: list[str], new_head: str, extra=()):
    """One epoch of two steps: enough to move every trained tensor, BatchNorm buffers too."""
    overrides = (f"model.weights={weights}", "model.input=[3, 64, 64]",
                 f"model.layers.{new_head}", "data.name=tiny-rgb", "train.batch_size=7",
                 "train.epochs=1", "train.lr=0.01", f"train.freeze=[{', '.join(freeze)}]",
                 *extra)
    return train(CONFIGS / config, out_dir=out, quiet=True, overrides=overrides)


def _assert_frozen_and_head_trained(result, file_state, frozen, head, config, overrides):
    trained = result.model.state_dict()
    checked = [k for k in trained if _under(k, frozen)]
    assert any("running_mean" in k for k in checked) or "alexnet" in config  # it has no BN
    for key in checked:  # weights, biases and BatchNorm buffers alike
        assert torch.equal(trained[key], file_state[key]), key
    seed_everything(0)  # the same initialization train() drew for the fresh head
    fresh = build_model(load_config(CONFIGS / config, overrides)).state_dict()
    assert trained[f"{head}.weight"].shape[0] == TINY_CLASSES
    assert not torch.equal(trained[f"{head}.weight"], fresh[f"{head}.weight"])
    report = (result.out_dir / "load_report.txt").read_text()
    assert f"re-initialized (head: class count differs from the weights'): 2: {head}.weight, " \
           f"{head}.bias" in report
    assert "missing: 0" in report and "unexpected: 0" in report


def test_resnet18_state_dict_fine_tunes_with_a_new_head(tiny_rgb, tmp_path):
    file_state = tvm.resnet18().state_dict()
    weights = _save({f"module.{k}": v for k, v in file_state.items()}, tmp_path / "r18.pth")
    result = _fine_tune("resnet18.yaml", weights, tmp_path / "run", RESNET_FROZEN,
                        "fc=[Linear, 512, 7]")
    _assert_frozen_and_head_trained(result, file_state, RESNET_FROZEN, "fc", "resnet18.yaml",
                                    ["model.input=[3, 64, 64]", "model.layers.fc=[Linear, 512, 7]"])
    trained = result.model.state_dict()
    assert not torch.equal(trained["layer4.1.bn2.running_mean"],
                           file_state["layer4.1.bn2.running_mean"])  # not frozen: it moves
    assert not torch.equal(trained["layer4.0.conv1.weight"], file_state["layer4.0.conv1.weight"])


@pytest.mark.slow
def test_alexnet_state_dict_fine_tunes_with_a_new_head(tiny_rgb, tmp_path):
    """The VGG layout (features without BatchNorm, the head at classifier.6 of a list given
    whole by --set) in its smallest model: AlexNet, 61 M parameters to VGG-11's 133 M."""
    file_state = tvm.alexnet().state_dict()
    weights = _save(file_state, tmp_path / "alexnet.pth")
    classifier = ("classifier=[[Dropout, 0.5], [Linear, 9216, 4096], [ReLU], [Dropout, 0.5], "
                  "[Linear, 4096, 4096], [ReLU], [Linear, 4096, 7]]")
    # all but the head frozen: no gradients or momentum for the 55 M weights before it
    frozen = ["features", "classifier.1", "classifier.4"]
    result = _fine_tune("alexnet.yaml", weights, tmp_path / "run", frozen, classifier)
    _assert_frozen_and_head_trained(result, file_state, frozen, "classifier.6",
                                    "alexnet.yaml", ["model.input=[3, 64, 64]",
                                                     f"model.layers.{classifier}"])


def test_frozen_batchnorm_stays_in_eval_mode(tmp_path):
    cfg = load_config(CONFIGS / "resnet18.yaml", ["model.input=[3, 64, 64]",
                                                    "train.freeze=[bn1, layer1]"])
    with torch.device("meta"):  # modes and requires_grad, no weights
        model = build_model(cfg)
    frozen = freeze_for_training(model, cfg.train)
    assert "bn1.weight" in frozen and "layer2.0.conv1.weight" not in frozen
    model.train()
    assert not model.bn1.training and not model.layer1[1].bn2.training
    assert model.layer2[0].bn1.training and model.training
    model.eval()
    model.train()
    assert not model.layer1[0].bn1.training


@pytest.fixture(scope="module")
def pretrained_digits(tmp_path_factory) -> str:
    """best.pt of one epoch on digits 0 to 4, shared by the tests that transfer from it."""
    out = tmp_path_factory.mktemp("pre")
    config = {**SMALL_CONV, "model": {**SMALL_CONV["model"], "layers": [
        *SMALL_CONV["model"]["layers"][:-1], ["Linear", 5]]},
        "data": {**SMALL_CONV["data"], "classes": [0, 1, 2, 3, 4]},
        "train": {**SMALL_CONV["train"], "epochs": 1}}
    train(config_from_dict(config, source="pre.yaml"), out_dir=out, quiet=True)
    return str(out / "best.pt")


def _digits_config(weights: str | None, **train_keys) -> dict:
    return {"model": {**SMALL_CONV["model"], "weights": weights, "layers": [
        *SMALL_CONV["model"]["layers"][:-1], ["Linear", 5]]},
        "data": {**SMALL_CONV["data"], "classes": [5, 6, 7, 8, 9], "train_per_class": 20},
        "train": {"batch_size": 50, "epochs": 2, "freeze": [0, 3], **train_keys}}


def test_a_cnnkit_checkpoint_transfers_to_other_classes(write_config, tmp_path, capsys,
                                                         pretrained_digits):
    weights = pretrained_digits
    source = torch.load(weights, weights_only=True)
    result = train(write_config(_digits_config(weights), "digits.yaml"), out_dir=tmp_path / "t")
    printed = capsys.readouterr().out
    trained = result.model.state_dict()
    for key in ("0.weight", "0.bias", "3.weight", "3.bias"):
        assert torch.equal(trained[key], source["model"][key]), key
    assert "re-initialized (head: the weights' classes 0,1,2,3,4, the data's 5,6,7,8,9): 2: " \
           "7.weight, 7.bias" in printed
    assert "loaded: 4: 0 (2), 3 (2)" in printed  # printed grouped; the file lists every key
    assert "loaded: 4: 0.weight, 0.bias, 3.weight, 3.bias" in (
        tmp_path / "t" / "load_report.txt").read_text()
    assert result.history[-1]["val_acc"] > 0.4  # 5 classes: chance is 0.2


def test_unfreeze_at_an_epoch_and_resume_across_it(write_config, tmp_path, pretrained_digits):
    weights = pretrained_digits
    source = torch.load(weights, weights_only=True)["model"]
    path = write_config(_digits_config(weights, unfreeze_at=2), "digits.yaml")
    first = train(path, out_dir=tmp_path / "t", quiet=True, overrides=("train.epochs=1",))
    assert torch.equal(first.model.state_dict()["0.weight"], source["0.weight"])
    train(path, out_dir=tmp_path / "t", quiet=True, resume=True, overrides=("train.epochs=2",))
    resumed = train(path, out_dir=tmp_path / "t", quiet=True, resume=True,
                    overrides=("train.epochs=3",))
    assert not torch.equal(resumed.model.state_dict()["0.weight"], source["0.weight"])
    assert all(p.requires_grad for p in resumed.model.parameters())


def test_unfreeze_at_needs_something_frozen(write_config, tmp_path):
    with pytest.raises(ConfigError, match="train.unfreeze_at: expected an epoch >= 1 with a "
                                          "non-empty train.freeze"):
        train(write_config(), out_dir=tmp_path / "r", quiet=True,
              overrides=("train.unfreeze_at=2",))


def test_an_unrelated_mismatch_is_refused_naming_the_keys(write_config, tmp_path):
    state = build_model(write_config()).state_dict()
    state["3.weight"] = torch.zeros(16, 8, 5, 5)  # a different kernel size than the model's 3
    state["extra.weight"] = torch.zeros(2)
    del state["0.bias"]
    weights = _save(state, tmp_path / "odd.pt")
    config = {**SMALL_CONV, "model": {**SMALL_CONV["model"], "weights": weights}}
    with pytest.raises(CheckpointError) as error:
        train(write_config(config), out_dir=tmp_path / "r", quiet=True)
    message = str(error.value)
    assert "does not fit the model: 1 differ in shape: 3.weight (file 16×8×5×5, model " \
           "16×8×3×3); 1 missing from the file: 0.bias; 1 unexpected in the file: " \
           "extra.weight (model.partial_load: true skips them)" in message
    assert "\n" not in message


def test_partial_load_lists_every_skipped_key(write_config, tmp_path):
    state = build_model(write_config()).state_dict()
    state["3.weight"] = torch.zeros(16, 8, 5, 5)
    state["extra.weight"] = torch.zeros(2)
    config = {**SMALL_CONV, "model": {**SMALL_CONV["model"], "partial_load": True,
                                      "weights": _save(state, tmp_path / "odd.pt")}}
    result = train(write_config(config), out_dir=tmp_path / "r", quiet=True,
                   overrides=("train.epochs=1", "train.freeze=[0]"))
    report = (tmp_path / "r" / "load_report.txt").read_text()
    assert "unexpected (skipped: model.partial_load): 1: extra.weight" in report
    assert "shape mismatch (skipped: model.partial_load): 1: 3.weight (file 16×8×5×5" in report
    assert torch.equal(result.model.state_dict()["0.weight"], state["0.weight"])


def test_torchvision_weights_offline_give_the_clear_error(monkeypatch, tmp_path, cli,
                                                         tiny_rgb):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    spec = "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    with pytest.raises(CheckpointError) as error:
        read_weights(spec)
    message = str(error.value)
    assert "not in torch's cache and the download failed (<urlopen error [Errno -3]" in message
    assert "offline, fetch https://download.pytorch.org/models/resnet18-f37072fd.pth on a " \
           "connected machine and set model.weights: /path/to/resnet18-f37072fd.pth" in message
    code, _, err = cli("train", CONFIGS / "resnet18.yaml", "--out", tmp_path / "r",
                       "--set", f"model.weights={spec}", "--set", "data.name=tiny-rgb",
                       "--set", "model.input=[3, 64, 64]",
                       "--set", "model.layers.fc=[Linear, 7]")
    assert code == 2 and err.count("\n") == 1 and "offline, fetch" in err


def test_torchvision_weights_come_from_the_cache_with_their_preprocessing(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", pytest.fail)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    _save({"conv1.weight": torch.ones(64, 3, 7, 7)}, cached)
    pretrained = read_weights("torchvision:ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(pretrained.state_dict["conv1.weight"], torch.ones(64, 3, 7, 7))
    assert len(pretrained.categories) == 1000 and pretrained.categories[0] == "tench"
    p = pretrained.preprocess
    assert (p.resize, p.crop, p.interpolation) == (256, 224, "bilinear")
    cfg = load_config(CONFIGS / "resnet18.yaml",
                      ["model.weights=torchvision:ResNet18_Weights.IMAGENET1K_V1",
                       "data.std=[0.5]"])
    resolved = with_pretrained_defaults(cfg)
    assert resolved.data.mean == [0.485, 0.456, 0.406] and resolved.data.std == [0.5]


def test_an_unknown_torchvision_name_suggests_one(tmp_path):
    with pytest.raises(ConfigError, match="no weights 'ResNet18_Weight'; did you mean "
                                          "ResNet18_Weights"):
        read_weights("torchvision:ResNet18_Weight.IMAGENET1K_V1")
    with pytest.raises(ConfigError, match=r"has no member 'V1' \(valid: IMAGENET1K_V1, DEFAULT"):
        read_weights("torchvision:ResNet18_Weights.V1")


def test_safetensors_and_prefixed_keys_load(write_config, tmp_path):
    from safetensors.torch import save_file

    model = build_model(write_config())
    state = {f"_orig_mod.module.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    loaded = read_weights(str(tmp_path / "w.safetensors")).state_dict
    assert loaded.keys() == model.state_dict().keys()
    assert strip_prefixes({"module.layer1._orig_mod.0.weight": 1}) == {"layer1.0.weight": 1}
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(CheckpointError, match="bad.safetensors: not a readable safetensors"):
        read_weights(str(tmp_path / "bad.safetensors"))


def test_weights_files_are_read_weights_only(tmp_path):
    torch.save({"fc.weight": torch.ones(1), "code": tvm.resnet18}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refused: it needs the global"):
        read_weights(str(tmp_path / "evil.pth"))
    with pytest.raises(CheckpointError, match="file not found"):
        read_weights(str(tmp_path / "none.pth"))


def test_head_is_the_last_layer_with_weights(meta_zoo):
    assert head_paths(meta_zoo("resnet18")) == ["fc"]
    assert head_paths(build_model(CONFIGS / "mnist_conv.yaml")) == ["7"]


def test_lr_groups_longest_prefix_wins(write_config):
    cfg = load_config(write_config(), ["train.lr_groups=[{modules: [0, 3], lr: 1.0e-4}, "
                                       "{modules: [3.bias], lr: 0.5}]", "train.freeze=[0]"])
    model = build_model(cfg)
    freeze_for_training(model, cfg.train)
    groups = build_optimizer(model, cfg.train).param_groups
    by_lr = {g["lr"]: sum(p.numel() for p in g["params"]) for g in groups}
    assert by_lr == {0.005: 4010, 1.0e-4: 16 * 8 * 9, 0.5: 16}  # layer 0 is frozen: absent
    bad = load_config(write_config(), ["train.lr_groups=[{modules: [conv], lr: 0.1}]"])
    with pytest.raises(ConfigError, match="train.lr_groups.0.modules: no module at 'conv'"):
        build_optimizer(build_model(bad), bad.train)


def test_summary_shows_frozen_layers(write_config, cli):
    code, out, _ = cli("summary", write_config(), "--set", "train.freeze=[0, 3]")
    assert code == 0
    assert "Trainable" in out and "Trainable params:     4,010" in out
    assert [line.split()[-1] for line in out.splitlines() if "Conv2d" in line] == ["no", "no"]


def test_freeze_errors(write_config, cli):
    code, _, err = cli("summary", write_config(), "--set", "train.freeze=[conv1]")
    assert code == 2 and "train.freeze: no module at 'conv1'" in err
    code, _, err = cli("summary", write_config(), "--set", "train.freeze=[0, 3, 7]")
    assert code == 2 and "covers every parameter" in err


def test_data_classes_and_train_per_class(write_config):
    cfg = load_config(write_config(), ["data.classes=[7, 3]", "data.train_per_class=5"])
    data = build_data(cfg.data)
    assert data.classes == ["7", "3"]
    assert data.splits["train"].labels.tolist().count(0) == 5 and len(data.splits["train"]) == 10
    assert set(data.splits["val"].labels.tolist()) == {0, 1}
    with pytest.raises(ConfigError, match="data.classes: unknown 11"):
        build_data(load_config(write_config(), ["data.classes=[1, 11]"]).data)
    with pytest.raises(DataError, match="class 3 has only 100 training examples, 101 asked"):
        build_data(load_config(write_config(), ["data.classes=[3]",
                                                "data.train_per_class=101"]).data)


def test_googlenet_file_with_auxiliary_heads_on_and_off():
    """Matching compares keys and shapes: all on the meta device."""
    with torch.device("meta"):
        file_state = tvm.googlenet(aux_logits=True, init_weights=False).state_dict()
    pretrained = Pretrained(file_state, "googlenet.pth")
    heads = {True: ["fc", "aux1.fc2", "aux2.fc2"], False: ["fc"]}
    for aux_heads, expected_heads in heads.items():
        cfg = load_config(CONFIGS / "googlenet.yaml", [f"model.aux_heads={aux_heads}",
                                                      "model.input=[3, 64, 64]"])
        with torch.device("meta"):
            model = build_model(cfg)
        assert head_paths(model) == expected_heads
        report = match(model, pretrained, head=head_paths(model), ignore=dropped_aux_heads(cfg))
        assert not report.skipped and not report.reinitialized
        aux_keys = [k for k in file_state if k.startswith("aux")]
        assert report.ignored == ([] if aux_heads else aux_keys)
