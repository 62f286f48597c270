"""Readers of user files are total: `cnnkit runs` and `cnnkit plot` over damaged run
directories give one line naming the file and go on listing the others, marked damaged; a
folder is ours by its manifest, never by a file's name; a sweep goes only where it belongs."""

from __future__ import annotations

import json

import pytest

from cnnkit.atomic import _host
from tests.test_runs import make_run

DAMAGE = {
    "config-list": ("config.yaml", "- 1\n- 2\n"),
    "epochs-abc": ("config.yaml", "train: {epochs: abc}\n"),
    "alias-bomb": ("config.yaml", "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcde", "bcdef"))),
    "metrics-bytes": ("metrics.csv", b"epoch,val_acc\n1,\xff\xfe\n"),
    "metrics-folder": ("metrics.csv", None),
    "no-epoch-column": ("metrics.csv", "val_acc\n0.5\n"),
    "status-5": ("run.json", None),
}


@pytest.mark.parametrize("form", list(DAMAGE))
def test_runs_and_plot_list_the_others_and_mark_the_damaged(tmp_path, cli, form):
    make_run(tmp_path / "good", epochs=2, acc=(0.5, 0.6))
    make_run(tmp_path / "other", epochs=2, lr=0.1, acc=(0.4, 0.7))
    bad = make_run(tmp_path / "bad", epochs=2, acc=(0.5,))
    name, content = DAMAGE[form]
    target = bad / name
    target.unlink(missing_ok=True)
    if form == "metrics-folder":
        target.mkdir()
    elif form == "status-5":
        target.write_text(json.dumps({"format": 1, "status": 5}))
    elif isinstance(content, bytes):
        target.write_bytes(content)
    else:
        target.write_text(content)
    code, out, err = cli("runs", tmp_path, "--json")
    assert code == 0 and "Traceback" not in err, err
    rows = {row["name"]: row["status"] for row in json.loads(out)["runs"]}
    assert rows["good"] == rows["other"] == "finished"
    assert rows["bad"].startswith("damaged: ") and str(bad) in rows["bad"], rows["bad"]
    code, _, err = cli("plot", tmp_path, "--out", tmp_path / "plot.png")
    assert code == 0 and err.count("\n") == 1 and "left out" in err and str(bad) in err, err


def test_a_crafted_sweep_json_lists_no_folder_outside_it(tmp_path, cli):
    make_run(tmp_path / "sweep" / "a", epochs=1, acc=(0.5,))
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(
        {"format": 1, "runs": {"a": {"overrides": []}, "../../../etc": {"overrides": []}}}))
    code, out, err = cli("runs", tmp_path / "sweep", "--json")
    assert code == 0, err
    names = [row["name"] for row in json.loads(out)["runs"]]
    assert not any("etc" in n for n in names) and "a" in " ".join(names)
    damaged = [row for row in json.loads(out)["runs"] if row["status"].startswith("damaged")]
    assert damaged and "is not a folder name" in damaged[0]["status"]


def test_another_tools_run_json_is_not_ours(write_config, tmp_path, cli):
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "run.json").write_text('{"tool": "other", "status": "done"}')
    (folder / "config.yaml").write_text("theirs: true\n")
    code, _, err = cli("train", write_config(), "--out", folder, "--quiet")
    assert code == 2 and err.count("\n") == 1 and "not a cnnkit run manifest" in err, err
    assert (folder / "run.json").read_text() == '{"tool": "other", "status": "done"}'
    assert (folder / "config.yaml").read_text() == "theirs: true\n"


def test_a_folder_of_a_users_temporaries_is_not_empty(write_config, tmp_path, cli):
    folder = tmp_path / "drafts"
    folder.mkdir()
    draft = folder / ".draft.99999.tmp"
    draft.write_text("my notes")
    code, _, err = cli("train", write_config(), "--out", folder, "--quiet")
    assert code == 2 and "is not a cnnkit run directory" in err, err
    assert draft.read_text() == "my notes"
    ours = folder.parent / "ours"
    ours.mkdir()
    (ours / f".last.pt.999999999@{_host()}.cnnkit.tmp").write_bytes(b"half")
    assert cli("train", write_config(), "--out", ours, "--quiet",
               "--set", "train.epochs=1")[0] == 0


@pytest.mark.parametrize("where", ["user", "run"])
def test_a_sweep_goes_only_into_a_sweep_folder(write_config, tmp_path, cli, trained_run, where):
    folder = {"user": tmp_path / "mine", "run": trained_run[1].out_dir}[where]
    if where == "user":
        folder.mkdir()
        (folder / "notes.txt").write_text("keep")
    before = sorted(p.name for p in folder.iterdir())
    code, _, err = cli("sweep", write_config(), "--grid", "train.lr=[0.1, 0.2]",
                       "--out", folder)
    assert code == 2 and err.count("\n") == 1, err
    assert ("is a run directory" if where == "run" else "not a cnnkit sweep folder") in err
    assert sorted(p.name for p in folder.iterdir()) == before


@pytest.mark.parametrize("command", ["export", "onnx", "plot", "visualize"])
def test_no_command_writes_over_a_file_training_needs(trained_run, tmp_path, cli, command):
    run = trained_run[1].out_dir
    before = {name: (run / name).read_bytes() for name in ("last.pt", "metrics.csv")}
    args = {"export": ["export", run / "best.pt", "--out", run / "last.pt"],
            "onnx": ["export", run / "best.pt", "--out", tmp_path / "slim.pt", "--onnx",
                     run / "metrics.csv"],
            "plot": ["plot", run, "--out", run / "metrics.csv"],
            "visualize": ["visualize", run / "best.pt", "filters", "--out", run / "last.pt"]}
    code, _, err = cli(*args[command])
    assert code == 2 and err.count("\n") == 1 and "training needs its" in err, err
    assert before == {name: (run / name).read_bytes() for name in before}


def test_the_manifest_allows_pruned():
    from cnnkit.rundir.lock import manifest_problem

    manifest = {"format": 1, "status": "pruned", "command": ["cnnkit"], "epoch": 1,
                "epochs": 3, "pid": 1, "host": "h", "created": "2026", "config": "config.yaml"}
    assert manifest_problem(manifest) is None
    assert "status 'done'" in manifest_problem({**manifest, "status": "done"})
