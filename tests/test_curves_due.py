"""curves.png during a run: drawn when due (spaced, a small share of the time), and always
after the last epoch."""

from __future__ import annotations

from cnnkit.training import curves
from cnnkit.training.curves import CurvePlotter


def _history(n: int) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5} for e in range(1, n + 1)]


def test_drawings_are_spaced_and_the_last_epoch_is_drawn_at_close(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(curves, "plot_curves",
                        lambda history, path, title="": drawn.append(len(history)))
    plotter = CurvePlotter(tmp_path / "curves.png", interval=3600)
    for n in range(1, 6):  # five fast epochs: none is due an hour after the start
        plotter.offer(_history(n))
    assert drawn == [] and not plotter.due()
    plotter.close()
    assert drawn == [5]  # the newest history, once


def test_a_due_drawing_happens_mid_run_and_sets_the_next(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(curves, "plot_curves",
                        lambda history, path, title="": drawn.append(len(history)))
    plotter = CurvePlotter(tmp_path / "curves.png", interval=0)
    plotter.offer(_history(1))
    plotter._thread.join()
    assert drawn == [1]
    plotter.interval = 3600  # the next is due an interval after the drawing
    plotter.offer(_history(2))
    plotter._thread.join()
    plotter.offer(_history(3))
    plotter.close()
    assert drawn[0] == 1 and drawn[-1] == 3


def test_a_real_drawing_at_close(tmp_path):
    plotter = CurvePlotter(tmp_path / "curves.png")
    plotter.offer(_history(3))
    plotter.close()
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
