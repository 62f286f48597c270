import pytest
import yaml

from cnnkit.config import apply_override, config_to_dict, load_config
from cnnkit.errors import ConfigError
from tests.conftest import SMALL_CONV


def test_defaults_fill_in_and_source_is_kept(write_config):
    path = write_config()
    cfg = load_config(path)
    assert cfg.train.lr == 0.005 and cfg.train.momentum == 0.9
    assert cfg.data.mean is None and cfg.source == str(path)
    assert "source" not in config_to_dict(cfg)


def test_override_sets_typed_values(write_config):
    cfg = load_config(write_config(), ["train.lr=0.001", "train.epochs=3", "data.name=mnist",
                                       "data.root=data"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.data.name) == (0.001, 3, "mnist")


def test_yaml11_exponent_strings_are_read_as_numbers(write_config):
    """PyYAML reads 1e-3 as a string; the schema says float, so it is a float."""
    assert load_config(write_config(), ["train.lr=1e-3"]).train.lr == 0.001
    config = {**SMALL_CONV, "train": {**SMALL_CONV["train"], "lr": "5e-3"}}
    assert load_config(write_config(config)).train.lr == 0.005


@pytest.mark.parametrize(("override", "expected"), [
    ("train.lrr=0.1", "train.lrr: unknown key; did you mean 'lr'?"),
    ("train.lr=fast", "train.lr: expected a number, found 'fast' (str)"),
    ("train.epochs=2.5", "train.epochs: expected an integer, found 2.5 (float)"),
    ("train.optimizer=adma", "train.optimizer: expected one of adam, adamw, sgd, found 'adma' "
                             "(str); did you mean 'adam'?"),
    ("trian.lr=0.1", "trian: unknown key; did you mean 'train'?"),
    ("data.mean=[a]", "data.mean.0: expected a number, found 'a' (str)"),
    ("train.nesterov=maybe", "train.nesterov: expected a boolean, found 'maybe' (str)"),
])
def test_errors_name_file_key_expected_and_found(write_config, override, expected):
    path = write_config()
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    message = str(info.value)
    assert message == f"{path}: {expected}" or message.startswith(f"{path}: {expected} (valid")
    assert "\n" not in message


def test_malformed_override_is_explained(write_config):
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(write_config(), ["train.lr"])


def test_override_through_a_value_is_refused():
    with pytest.raises(ConfigError, match="train.lr is 0.1 .* not a section"):
        apply_override({"train": {"lr": 0.1}}, "train.lr.x=1")


def test_missing_required_key(write_config):
    path = write_config({"model": {"input": [1, 28, 28]}})
    with pytest.raises(ConfigError, match=r"model.layers: required key is missing"):
        load_config(path)


def test_python_tags_are_refused_not_run(tmp_path):
    path = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match=r"evil.yaml: not valid YAML: line 1"):
        load_config(path)
    assert not marker.exists()


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="expected a mapping with sections"):
        load_config(path)
