"""`cnnkit eval A B C` (averaged probabilities) and `cnnkit eval --tta`."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from cnnkit.data import build_data
from cnnkit.infer.ensemble import VIEWS, view
from cnnkit.infer.model import load_predictor


def test_a_view_shifts_and_rotates_with_the_border_repeated():
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    right = view(x, 1, 0, 0.0)
    assert right[0, 0, 2, 3] == 1.0 and right.sum() == 1.0  # moved one pixel right
    down = view(x, 0, 1, 0.0)
    assert down[0, 0, 3, 2] == 1.0
    assert view(x, 0, 0, 0.0) is x
    turned = view(torch.ones(2, 1, 8, 8), 0, 0, 8.0)  # the border repeated: nothing goes dark
    assert torch.allclose(turned, torch.ones_like(turned))
    assert len(VIEWS) == 7 and VIEWS[0] == (0, 0, 0.0)


def _probabilities(path, *, tta: bool = False):
    predictor = load_predictor(path)
    model, cfg = predictor.model, predictor.cfg
    data = build_data(cfg.data)
    loader = data.loader("val", batch_size=1000, shuffle=False, seed=0,
                         device=torch.device("cpu"))
    x, y = next(loader.batches(0))  # the whole split: 300 digits
    with torch.no_grad():
        views = VIEWS if tta else VIEWS[:1]
        p = sum(F.softmax(model(view(x, *v)), dim=1) for v in views) / len(views)
    return p, y


def test_eval_averages_the_probabilities_of_several_checkpoints(trained_run, cli):
    _, result = trained_run
    best, last = result.out_dir / "best.pt", result.out_dir / "last.pt"
    code, out, err = cli("eval", best, last, "--json")
    assert code == 0, err
    report = json.loads(out)
    (pa, y), (pb, _) = _probabilities(best), _probabilities(last)
    mean = (pa + pb) / 2
    assert report["n"] == 300 and report["tta_views"] == 1
    assert report["accuracy"] == (mean.argmax(1) == y).double().mean().item()
    assert abs(report["loss"] - F.nll_loss(mean.log(), y).item()) < 1e-5
    assert [m["accuracy"] for m in report["members"]] == [
        (p.argmax(1) == y).double().mean().item() for p in (pa, pb)]
    code, out, _ = cli("eval", best, last)
    assert "2 checkpoints averaged" in out and "each alone" in out


def test_eval_tta_averages_over_views(trained_run, cli):
    _, result = trained_run
    best = result.out_dir / "best.pt"
    code, out, err = cli("eval", best, "--tta", "--json")
    assert code == 0, err
    report = json.loads(out)
    p, y = _probabilities(best, tta=True)
    assert report["tta_views"] == 7
    assert report["accuracy"] == (p.argmax(1) == y).double().mean().item() > 0.8
    plain = report["members"][0]["accuracy"]
    code, out, _ = cli("eval", best)  # without --tta: the one-checkpoint path, same plain score
    assert f"accuracy {plain:.4f}" in out


def test_tta_and_averages_refuse_localization(trained_localization_run, cli):
    _, result = trained_localization_run
    code, _, err = cli("eval", result.out_dir / "best.pt", "--tta")
    assert code == 2 and "score classification; this checkpoint's task is localization" in err
