"""Reliability, second ring, checkpoints: reads that cannot block or exhaust memory, weights
that are dense and finite, keys that agree, and `model.weights` through the same checks."""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import pytest
import torch

from cnnkit.checkpoint import load_checkpoint, read_file, save_checkpoint
from cnnkit.errors import CheckpointError
from cnnkit.models.weights import read_weights


@pytest.fixture(scope="module")
def state(trained_run) -> dict:
    return load_checkpoint(trained_run[1].out_dir / "last.pt")


def _copy(state: dict) -> dict:
    return {**state, "model": dict(state["model"])}


def test_a_fifo_and_dev_zero_are_refused_without_reading(cli, tmp_path):
    fifo = tmp_path / "best.pt"
    os.mkfifo(fifo)  # no writer: open() would wait forever, read_bytes() too
    for path in (fifo, "/dev/zero"):
        code, _, err = cli("eval", path)
        assert code == 2 and err.count("\n") == 1 and "not a regular file" in err, err


def test_a_large_file_is_read_in_chunks_not_into_memory(tmp_path):
    """A 20 GB sparse file (no bytes on disk): refused as unreadable without a MemoryError;
    nothing holds its 20 GB."""
    path = tmp_path / "sparse.pt"
    with open(path, "wb") as f:
        f.truncate(20 * 2**30)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_file(path)


def test_a_deflated_record_cannot_declare_more_than_the_file_holds(state, tmp_path):
    """torch would inflate a deflated record: 98 KB of file, 100 MB of zeros in memory."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(25_000_000)}}, buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w") as bomb:
        for info in source.infolist():
            packed = zipfile.ZIP_DEFLATED if "/data/" in info.filename else zipfile.ZIP_STORED
            bomb.writestr(info.filename, source.read(info.filename), compress_type=packed)
    assert path.stat().st_size < 200_000
    with pytest.raises(CheckpointError, match=r"refused: its record .*data/0 declares "
                                              r"100,000,000 bytes"):
        read_file(path)


@pytest.mark.parametrize(("form", "message"), [
    ("sparse", "'model': 0.weight is a sparse_coo tensor"),
    ("meta", "'model': 0.weight is on the meta device"),
    ("nan", "'model': 0.weight is not finite"),
    ("complex", "'model': 0.weight is torch.complex64"),
    ("best-epoch", "'best_epoch' 99 is past 'epoch' 2"),
    ("best-nan", "'best' should be a finite number or null"),
    ("huge-input", "'preprocessing' should be a preprocessing record"),
    ("huge-config", "model.input: expected at most 67,108,864 values an example"),
])
def test_re_signed_malformed_checkpoints_are_refused(cli, state, tmp_path, form, message):
    state = _copy(state)
    weight = state["model"]["0.weight"]
    change = {
        "sparse": lambda: state["model"].update({"0.weight": weight.to_sparse()}),
        "meta": lambda: state["model"].update({"0.weight": weight.to("meta")}),
        "nan": lambda: state["model"].update({"0.weight": weight * float("nan")}),
        "complex": lambda: state["model"].update({"0.weight": weight.to(torch.complex64)}),
        "best-epoch": lambda: state.update(best_epoch=99),
        "best-nan": lambda: state.update(best=float("nan")),
        "huge-input": lambda: state.update(preprocessing={
            **state["preprocessing"], "height": 60000, "width": 60000}),
        "huge-config": lambda: state.update(config={**state["config"], "model": {
            **state["config"]["model"], "input": [1, 60000, 60000]}}),
    }
    change[form]()
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    assert len(path.read_bytes()) < 10**6
    code, _, err = cli("eval", path)
    assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize(("form", "message"), [
    ("sparse", "0.weight is a sparse_coo tensor"),
    ("meta", "0.weight is on the meta device"),
    ("nan", "0.weight is not finite"),
    ("classes", "'classes' should be a list of names"),
    ("int", "0.weight is torch.int64, the model's is torch.float32"),
    ("bool", "0.weight is torch.bool, the model's is torch.float32"),
    ("complex", "0.weight is torch.complex64"),
])
def test_model_weights_go_through_the_same_tensor_checks(cli, trained_run, tmp_path, form,
                                                         message):
    """A plain file of weights (no trailer, no config): once tracebacks or silent casts."""
    config, result = trained_run
    weights = dict(load_checkpoint(result.out_dir / "last.pt")["model"])
    w = weights["0.weight"]
    extra = {}
    weights["0.weight"] = {"sparse": w.to_sparse(), "meta": w.to("meta"), "nan": w * torch.nan,
                           "int": w.long(), "bool": w > 0, "complex": w.to(torch.complex64),
                           "classes": w}[form]
    if form == "classes":
        extra = {"classes": 5}
    path = tmp_path / "weights.pt"
    torch.save({"model": weights, **extra}, path)
    code, _, err = cli("train", config, "--out", tmp_path / "run", "--quiet", "--set",
                       f"model.weights={path}", "--set", "train.epochs=0")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "run").exists() or not (tmp_path / "run" / "last.pt").exists()


def test_a_legacy_file_loads_with_the_warning_and_its_structure_checked(state, tmp_path,
                                                                        capsys):
    """Trailer and `format` both removed: indistinguishable from a genuine format-1 file,
    so it loads with the warning (docs: the module's doc and README) but is still checked."""
    legacy = {k: v for k, v in _copy(state).items() if k != "format"}
    path = tmp_path / "legacy.pt"
    torch.save(legacy, path)
    assert load_checkpoint(path)["epoch"] == state["epoch"]
    assert "written before checkpoints carried a digest" in capsys.readouterr().err
    legacy["model"]["0.weight"] = legacy["model"]["0.weight"] * torch.nan
    torch.save(legacy, path)
    with pytest.raises(CheckpointError, match="0.weight is not finite"):
        load_checkpoint(path)


def test_a_large_checkpoint_is_not_held_twice(trained_run, tmp_path):
    """The digest is streamed; torch reads the tensors from the file: the copy of 5x the
    file once made (bytes, body slice, BytesIO) is gone. Checked on what is read."""
    path = tmp_path / "big.pt"
    save_checkpoint(path, {**load_checkpoint(trained_run[1].out_dir / "last.pt"),
                           "extra": {"big": torch.zeros(2_000_000)}})
    shutil.copy(path, tmp_path / "copy.pt")
    assert torch.equal(read_file(tmp_path / "copy.pt")["extra"]["big"], torch.zeros(2_000_000))
    assert read_weights(str(path)).state_dict.keys() == \
        load_checkpoint(path)["model"].keys()


@pytest.mark.parametrize(("form", "message"), [
    ("step-past", "'step' 999 is past the 10 steps of an epoch of this run"),
    ("totals-length", "'totals' holds 5 sums where this run's task keeps 33"),
])
def test_resume_refuses_a_step_or_totals_that_do_not_fit(cli, trained_run, tmp_path, form,
                                                         message):
    """step 999 once "trained" an epoch on 0 batches, wrote loss 0.0 and exit 0; totals of
    the wrong length skewed the metrics."""
    config, result = trained_run
    run = tmp_path / "run"
    shutil.copytree(result.out_dir, run)
    state = load_checkpoint(run / "last.pt", for_resume=True)
    state.update(epoch=1, history=state["history"][:1], best_epoch=1,
                 step=999 if form == "step-past" else 3, totals=torch.zeros(5, dtype=torch.float64))
    save_checkpoint(run / "last.pt", state)
    saved = (run / "last.pt").read_bytes()
    code, _, err = cli("train", config, "--out", run, "--resume", "--quiet")
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert (run / "last.pt").read_bytes() == saved


def test_predict_on_a_device_this_machine_lacks_is_one_line(cli, trained_run, tmp_path):
    from PIL import Image

    from cnnkit.data.mnist_sample import read_sample

    image = tmp_path / "digit.png"
    Image.fromarray(read_sample()[0][0, 0].numpy(), mode="L").save(image)
    if not (torch.backends.mps.is_available()):
        code, _, err = cli("predict", trained_run[1].out_dir / "best.pt", image,
                           "--device", "mps")
        assert code == 2 and err.count("\n") == 1 and "no MPS device" in err, err
    code, _, err = cli("predict", trained_run[1].out_dir / "best.pt", image, "--device", "cuda:7")
    assert code == 2 and err.count("\n") == 1 and "cuda:7 asked for" in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CUDA machine it evaluates on cuda")
def test_a_checkpoint_trained_on_cuda_evaluates_here_with_a_note(cli, state, tmp_path):
    state = {**state, "config": {**state["config"], "train": {**state["config"]["train"],
                                                               "device": "cuda"}}}
    path = tmp_path / "from_a_gpu.pt"
    save_checkpoint(path, state)
    code, out, err = cli("eval", path)
    assert code == 0, err
    assert "train.device cuda, which this machine lacks; using cpu" in err
