"""`cnnkit export`: a slim checkpoint to share or serve, and ONNX where torch.onnx can export.

The slim file holds the weights evaluation uses (the EMA's where the run kept one), the
preprocessing record, class names, task and config, stamped and digested like any checkpoint;
no optimizer, RNG or history (an Adam run's last.pt is ~3× its weights), and no absolute
paths: data.root keeps only its last folder name, model.weights and out are dropped. Every
command that reads a checkpoint reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnkit.checkpoint import save_checkpoint
from cnnkit.config import config_to_dict
from cnnkit.errors import CnnkitError
from cnnkit.infer.model import load_predictor
from cnnkit.infer.predict import Predictor
from cnnkit.rundir import refuse_run_file

ONNX_TOLERANCE = 1e-4  # largest |ONNX - PyTorch| output difference accepted on the sample


def slim_state(predictor: Predictor) -> dict[str, Any]:
    """What a slim checkpoint holds (save_checkpoint adds format, versions and the digest)."""
    config = config_to_dict(predictor.cfg)
    data = config["data"]
    data["download"] = False
    if data.get("root"):
        data["root"] = Path(data["root"]).name or None  # a hint, not a path on this machine
    config["model"]["weights"] = None  # the weights are in the file
    config["out"] = None
    return {"model": predictor.model.state_dict(), "config": config, "task": predictor.task.name,
            "classes": list(predictor.classes), "preprocessing": dict(predictor.preprocessing)}


def export(path: str | Path, out: str | Path, *, onnx: str | Path | None = None
           ) -> dict[str, Any]:
    """Write the slim checkpoint to `out` (and an ONNX file to `onnx`); what was written."""
    refuse_run_file(out, flag="--out")
    if onnx is not None:
        refuse_run_file(onnx, flag="--onnx")
    predictor = load_predictor(path)
    save_checkpoint(out, slim_state(predictor))
    written = {"checkpoint": str(out), "bytes": Path(out).stat().st_size,
               "source_bytes": predictor.path.stat().st_size}
    if onnx is not None:
        written["onnx"] = str(onnx)
        written["onnx_max_difference"] = export_onnx(predictor, onnx)
    return written


def export_onnx(predictor: Predictor, out: str | Path) -> float:
    """The model as ONNX (input "images" (B, C, H, W), normalized as recorded; output
    "scores"), its outputs checked against PyTorch's on a random sample of 2 images at the
    recorded evaluation size (the crop, which FixRes sets apart from the training size); the
    largest absolute difference."""
    from cnnkit.infer.images import input_size

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if not _importable(name)]
    if missing:
        raise CnnkitError(f"--onnx: needs the {', '.join(missing)} package"
                          f"{'s' if len(missing) > 1 else ''} (pip install {' '.join(missing)}); "
                          f"the slim checkpoint was written")
    import onnxruntime

    model = predictor.model.cpu().eval()
    shape = (predictor.preprocessing["channels"], *input_size(predictor.preprocessing))
    sample = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    try:
        program = torch.onnx.export(model, (sample,), dynamo=True, input_names=["images"],
                                    output_names=["scores"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
        program.save(str(out))
    except Exception as exc:  # the exporter raises many kinds on unsupported layers
        raise CnnkitError(f"--onnx: torch.onnx cannot export this model "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]})"
                          ) from None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": sample.numpy()})[:1]
    with torch.no_grad():
        expected = model(sample)
    expected = getattr(expected, "logits", expected)
    difference = float((torch.from_numpy(got) - expected).abs().max())
    if difference > ONNX_TOLERANCE:
        raise CnnkitError(f"--onnx: {out}: its outputs differ from PyTorch's by {difference:.2e} "
                          f"(more than {ONNX_TOLERANCE:g}) on a sample; do not use it")
    return difference


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
