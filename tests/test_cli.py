import json
import subprocess
import sys

import pytest
import torch

from cnnkit.infer.evaluate import evaluate_checkpoint
from cnnkit.models.builder import build_model
from cnnkit.training.trainer import train
from tests.conftest import CONFIGS, ROOT


def test_summary_table_and_json(cli):
    code, out, _ = cli("summary", CONFIGS / "mnist_conv.yaml")
    assert code == 0 and "Total params:         5,386" in out and "16×5×5" in out
    code, out, _ = cli("summary", CONFIGS / "mnist_dense.yaml", "--json")
    summary = json.loads(out)
    assert summary["total_params"] == summary["trainable_params"] == 178_110
    assert set(summary["layers"][1]) == {"name", "type", "output_shape", "params",
                                         "receptive_field", "jump", "trainable_params", "frozen"}


def test_train_eval_plot_end_to_end(cli, write_config, tmp_path):
    config = write_config()
    code, out, err = cli("train", config, "--out", tmp_path / "run", "--set", "train.epochs=1")
    assert code == 0, err
    assert "epoch   1/1" in out
    code, out, err = cli("eval", tmp_path / "run" / "best.pt", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["n"] == 300 and 0.5 < result["accuracy"] <= 1 and result["loss"] > 0
    code, out, err = cli("eval", tmp_path / "run" / "last.pt", "--split", "test")
    assert code == 2 and "split 'test': this dataset has train, val" in err
    code, _, err = cli("train", config, "--out", tmp_path / "run", "--resume",
                       "--set", "train.epochs=2", "--quiet")
    assert code == 0, err
    code, out, err = cli("plot", tmp_path / "run", tmp_path / "run", "--out",
                         tmp_path / "cmp.png")
    assert code == 0 and (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_builds_on_meta_and_scores_what_training_scored(write_config, tmp_path,
                                                              monkeypatch):
    result = train(write_config(), out_dir=tmp_path / "run", quiet=True,
                   overrides=("train.epochs=1",))
    devices = []
    monkeypatch.setattr("cnnkit.infer.model.build_network",
                        lambda cfg: devices.append(torch.empty(0).device) or build_model(cfg))
    scored = evaluate_checkpoint(tmp_path / "run" / "last.pt")
    assert devices == [torch.device("meta")]  # no init spent on weights the checkpoint holds
    assert scored["loss"] == pytest.approx(result.history[-1]["val_loss"], rel=1e-5)
    assert scored["accuracy"] == result.history[-1]["val_acc"]


@pytest.mark.parametrize(("args", "message"), [
    (["train", "nope.yaml"], "nope.yaml: config file not found"),
    (["summary", CONFIGS / "mnist_conv.yaml", "--set", "train.lrr=1"], "did you mean 'lr'?"),
    (["eval", "missing.pt"], "missing.pt: checkpoint not found"),
    (["plot", "no_run"], "no_run/metrics.csv: not found"),
])
def test_user_errors_are_one_line_exit_2(cli, args, message):
    code, out, err = cli(*args)
    assert code == 2
    assert err.startswith("cnnkit: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_checkpoint_is_one_line(cli, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    code, _, err = cli("eval", bad)
    assert code == 2 and "bad.pt: not a readable checkpoint" in err


def test_debug_shows_the_traceback(cli):
    with pytest.raises(Exception, match="config file not found"):
        cli("train", "nope.yaml", "--debug")
    with pytest.raises(Exception, match="config file not found"):  # before the subcommand too
        cli("--debug", "train", "nope.yaml")


def test_help_and_usage_errors_return_their_code_in_process(cli):
    code, out, _ = cli("--help")
    assert code == 0 and out.startswith("usage: cnnkit") and "--version" in out
    code, out, err = cli("train")
    assert code == 2 and out == "" and err.endswith("required: config\n")
    code, _, err = cli("trian", "x.yaml")
    assert code == 2 and "invalid choice: 'trian'" in err


@pytest.mark.slow  # fresh interpreters importing torch
def test_python_dash_m_and_console_script():
    run = subprocess.run([sys.executable, "-m", "cnnkit", "summary",
                          str(CONFIGS / "mnist_dense.yaml"), "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(run.stdout)["total_params"] == 178_110
    bad = subprocess.run([sys.executable, "-m", "cnnkit", "summary", "nope.yaml"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_eval_points_a_checkpoint_at_mnist_idx_files(cli, write_config, tmp_path):
    """--set moves a checkpoint to other data: here MNIST IDX files (torchvision's layout)
    made from real sample digits, scored on their official test split."""
    from cnnkit.data.idx import write_idx
    from cnnkit.data.mnist_sample import read_sample

    images, labels = read_sample()
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, rows in (("train", slice(0, 600)), ("t10k", slice(4000, 4400))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[rows, 0].numpy())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels[rows].numpy())
    assert cli("train", write_config(), "--out", tmp_path / "run", "--quiet")[0] == 0
    code, out, err = cli("eval", tmp_path / "run" / "best.pt", "--split", "test", "--json",
                         "--set", "data.name=mnist", "--set", f"data.root={tmp_path / 'mnist'}",
                         "--set", "data.train_size=null", "--set", "data.val_size=100")
    assert code == 0, err
    result = json.loads(out)
    assert result["split"] == "test" and result["n"] == 400 and result["accuracy"] > 0.5
    code, _, err = cli("eval", tmp_path / "run" / "best.pt", "--set", "data.name=mnist",
                       "--set", f"data.root={tmp_path / 'empty'}")
    assert code == 2 and "train-images-idx3-ubyte" in err and "data.download" in err
