"""`cnnkit export`: a slim checkpoint to share or serve, and ONNX where torch.onnx can export.

The slim file holds the weights evaluation uses (the EMA's where the run kept one), the
preprocessing record, class names, task and config, stamped and digested like any checkpoint;
no optimizer, RNG or history (an Adam run's last.pt is ~3× its weights), and no absolute
paths: data.root keeps only its last folder name, model.weights and out are dropped. Every
command that reads a checkpoint reads it.

The ONNX file carries what a user needs beside the weights, in its metadata (string values,
JSON where structured): "task", "classes", "preprocessing" (the checkpoint's record) and
"scores" (how to read the output). Its check runs onnxruntime on real images prepared as the
run prepares them and compares relative to the outputs' scale: float32 rounding grows with the
logits, and a briefly trained ResNet-18 whose logits reach 2.8e5 differs from PyTorch by 0.125
absolute, 4.5e-7 relative, while both sit as close to a float64 forward pass (0.077 and 0.106;
docs/checkpoints.md, "Why the ONNX check is relative", has the commands).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from cnnkit.checkpoint import save_checkpoint
from cnnkit.config import config_to_dict
from cnnkit.errors import CnnkitError
from cnnkit.infer.model import load_predictor
from cnnkit.infer.predict import Predictor
from cnnkit.rundir import refuse_run_file
from cnnkit.tasks import main_logits

# largest |ONNX - PyTorch| accepted, as a fraction of the outputs' scale (their largest
# magnitude, at least 1); float32 rounding measured 4.5e-7 on ResNet-18, a wrong graph ~1
ONNX_TOLERANCE = 1e-4
CHECK_IMAGES = 8  # images the ONNX check runs on
PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def slim_state(predictor: Predictor) -> dict[str, Any]:
    """What a slim checkpoint holds (save_checkpoint adds format, versions and the digest)."""
    config = config_to_dict(predictor.cfg)
    data = config["data"]
    data["download"] = False
    if data.get("root"):
        data["root"] = Path(data["root"]).name or None  # a hint, not a path on this machine
    config["model"]["weights"] = None  # the weights are in the file
    config["out"] = None
    return {"model": predictor.model.state_dict(), "config": config,
            "task": predictor.task.name, "classes": list(predictor.classes),
            "preprocessing": dict(predictor.preprocessing)}


def export(path: str | Path, out: str | Path, *, onnx: str | Path | None = None
           ) -> dict[str, Any]:
    """Write the slim checkpoint to `out` (and an ONNX file to `onnx`); what was written."""
    refuse_run_file(out, flag="--out")
    if onnx is not None:
        refuse_run_file(onnx, flag="--onnx")
    if onnx is not None:
        require_onnx()  # before anything is written
    predictor = load_predictor(path)
    save_checkpoint(out, slim_state(predictor))
    written = {"checkpoint": str(out), "bytes": Path(out).stat().st_size,
               "source_bytes": predictor.path.stat().st_size}
    if onnx is not None:
        written["onnx"] = str(onnx)
        written.update(export_onnx(predictor, onnx))
    return written


def require_onnx() -> None:
    """One line naming the packages --onnx needs that are not installed."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise CnnkitError(f"--onnx: needs the {', '.join(missing)} package"
                          f"{'s' if len(missing) > 1 else ''} (pip install 'cnnkit[onnx]'); "
                          f"nothing was written")


def export_onnx(predictor: Predictor, out: str | Path) -> dict[str, Any]:
    """The model as ONNX (input "images" (B, C, H, W), normalized as recorded; output
    "scores"), metadata as the module docstring says, checked against PyTorch on real images:
    {"onnx_relative_difference", "onnx_absolute_difference", "onnx_checked_on"}."""
    import onnxruntime

    require_onnx()
    model = predictor.model.cpu().eval()
    images, where = check_images(predictor)
    try:
        program = torch.onnx.export(model, (images,), dynamo=True, verbose=False,
                                    input_names=["images"], output_names=["scores"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
        program.model.metadata_props.update(onnx_metadata(predictor))
        program.save(str(out))
    except Exception as exc:  # the exporter raises many kinds on unsupported layers
        raise CnnkitError(f"--onnx: torch.onnx cannot export this model "
                          f"({type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]})"
                          ) from None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": images.numpy()})[:1]
    with torch.no_grad():
        expected = main_logits(model(images)).float()
    absolute = float((torch.from_numpy(got) - expected).abs().max())
    relative = absolute / max(1.0, float(expected.abs().max()))
    if relative > ONNX_TOLERANCE:
        raise CnnkitError(f"--onnx: {out}: its outputs differ from PyTorch's by {relative:.1e} "
                          f"of their scale ({absolute:.2e} absolute; more than "
                          f"{ONNX_TOLERANCE:g}) on {where}; do not use it")
    return {"onnx_relative_difference": relative, "onnx_absolute_difference": absolute,
            "onnx_checked_on": where}


def onnx_metadata(predictor: Predictor) -> dict[str, str]:
    """The ONNX file's metadata_props: what preparing inputs and reading outputs takes."""
    from cnnkit.version import version

    return {"task": predictor.task.name, "classes": json.dumps(list(predictor.classes)),
            "preprocessing": json.dumps(dict(predictor.preprocessing)),
            "scores": predictor.task.scores, "input": "images", "output": "scores",
            "producer": f"cnnkit {version()}"}


def check_images(predictor: Predictor) -> tuple[torch.Tensor, str]:
    """(B, C, H, W) inputs for the check, prepared by the checkpoint's record, and what they
    are: images of the run's own data where it is on this machine (validation first), else
    digits of the embedded sample (real images, resized and coloured as the record says)."""
    import warnings

    from cnnkit.infer.images import prepare

    try:
        images, where = _own_images(predictor)
    except (CnnkitError, OSError):
        images, where = [], ""
    if not images:
        from cnnkit.data.mnist_sample import read_sample

        images = list(read_sample()[0][-CHECK_IMAGES:])  # uint8 (1, 28, 28) each
        where = f"{len(images)} digits of the embedded sample (the run's data is not here)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return prepare(images, predictor.preprocessing), where


def _own_images(predictor: Predictor) -> tuple[list[Any], str]:
    """Up to CHECK_IMAGES images of the run's data (paths or uint8 tensors), and where from."""
    data = predictor.cfg.data
    if data.name == "imagefolder":
        from cnnkit.infer.images import expand

        for split in ("val", "train"):
            folder = Path(data.root) / split
            if folder.is_dir():
                found = expand([folder])[:CHECK_IMAGES]
                return found, f"{len(found)} images of {folder}"
        return [], ""
    from cnnkit.data import build_data

    built = build_data(data, source=str(predictor.path))
    split = "val" if "val" in built.splits else "train"
    images = list(built.splits[split].images[:CHECK_IMAGES])
    return images, f"{len(images)} images of its {split} split ({data.name})"
