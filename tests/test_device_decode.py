"""data.decode: gpu (data/device_decode.py): its code path run on the CPU
(`decode_jpeg(device="cpu")`) gives the images of the PIL path within JPEG decoders' and
resamplers' tolerance, with the same draws; refused in one line where it cannot run."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

from cnnkit.data.decode import decode_eval, decode_train
from cnnkit.data.device_decode import decode_batch, read_encoded, upright
from cnnkit.data.transforms import eval_transform, train_transform
from cnnkit.errors import DataError
from tests.test_decode import MEAN, folder_cfg, photo

CPU = torch.device("cpu")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_upright_turns_as_exif_transpose_does(orientation):
    image = Image.fromarray(torch.randint(0, 255, (5, 7, 3), dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(0)).numpy())
    exif = image.getexif()
    exif[0x0112] = orientation
    expected = v2.functional.pil_to_tensor(ImageOps.exif_transpose(image))
    assert torch.equal(upright(v2.functional.pil_to_tensor(image), orientation), expected)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("device_decode")
    png = root / "c.png"
    Image.open(photo(root / "tmp.jpg", size=(300, 240))).save(png)
    return [photo(root / "a.jpg"), photo(root / "b.jpg", orientation=6), png]


def _pil_train(path, transform, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return decode_train(path, transform, draft=False)


def test_the_cpu_path_gives_the_pil_path_s_images_with_the_same_draws(files):
    transform = train_transform(folder_cfg(48, color_jitter=0.4, random_erasing=0.5),
                                mean=MEAN)
    items = [read_encoded(path, seed) for seed, path in enumerate(files * 3)]
    assert [item.jpeg for item in items[:3]] == [True, True, False]
    images, kept, bad = decode_batch(items, transform, CPU)
    assert images.shape == (9, 3, 48, 48) and images.dtype == torch.uint8
    assert kept == list(range(9)) and bad == []
    pil = torch.stack([_pil_train(path, transform, seed) for seed, path in enumerate(files * 3)])
    differ = (images.float() - pil.float()).abs().mean(dim=(1, 2, 3))
    assert differ.max() < 6, differ  # the same crops, flips, jitter and erasing; a draw apart
    # would differ by tens (the crops of a 480x360 picture with a disc and stripes)
    val = eval_transform(folder_cfg(32))
    images, _, _ = decode_batch([read_encoded(p, None) for p in files], val, CPU)
    pil = torch.stack([decode_eval(p, val) for p in files])
    assert (images.float() - pil.float()).abs().mean() < 3


def test_a_bad_jpeg_is_named_and_the_others_kept(files, tmp_path):
    bad = tmp_path / "bad.jpg"
    raw = files[0].read_bytes()
    bad.write_bytes(raw[:len(raw) // 2])  # the header reads; the scan ends halfway
    items = [read_encoded(files[0], 1), read_encoded(bad, 2)]
    images, kept, failed = decode_batch(items, train_transform(folder_cfg(16), mean=MEAN), CPU)
    assert images.shape == (1, 3, 16, 16) and kept == [0]
    assert failed == [(str(bad), f"{bad}: cannot decode image (Image is incomplete or "
                                 f"truncated)")]
    bad.write_bytes(raw[:2] + b"\0" * 50)  # not even a header: the worker names it
    with pytest.raises(DataError, match=f"{bad}: cannot decode image"):
        read_encoded(bad, None)


def test_refused_in_one_line_where_it_cannot_run(cli, write_config, tmp_path):
    from tests.imagefiles import write_class_folders

    root = write_class_folders(tmp_path / "d", counts={"train": 2, "val": 1})
    folders = {"model": {"layers": [["Flatten"], ["Linear", 2]]},
               "data": {"name": "imagefolder", "root": str(root), "image_size": 8,
                        "decode": "gpu", "workers": 0},
               "train": {"device": "cpu", "epochs": 1, "batch_size": 2}}
    code, out, err = cli("train", str(write_config(folders)), "--out", str(tmp_path / "r"))
    assert code == 2 and err.strip().splitlines() == [
        "cnnkit: error: data.decode: gpu decodes JPEGs with nvJPEG on a CUDA device; this run "
        "trains on cpu (set data.decode: cpu)"]
    for name in ("mnist-sample", "localization-mnist"):
        config = write_config({"model": {"layers": [["Flatten"], ["Linear", 2]]},
                               "data": {"name": name, "decode": "gpu"}}, name="d.yaml")
        code, _, err = cli("train", str(config))
        assert code == 2 and "data.decode: gpu decodes class folders' JPEGs (imagefolder); " \
            f"{name} is held as tensors" in err, err


def test_gpu_check_finds_the_key():
    """scripts/gpu_check.py's folders step sets the schema key whose name holds `decode` to
    the first of cuda, gpu, nvjpeg it allows."""
    import runpy

    check = runpy.run_path("scripts/gpu_check.py", run_name="gpu_check")
    keys = check["schema_keys"]()
    decode = [k for k in keys if "decode" in k.split(".")[-1]]
    assert decode == ["data.decode"] and "gpu" in check["literals"](keys["data.decode"])


@pytest.mark.cuda
def test_on_cuda_the_same_images_as_on_the_cpu(files):
    transform = train_transform(folder_cfg(48), mean=MEAN)
    items = [read_encoded(path, seed) for seed, path in enumerate(files)]
    cuda, kept, _ = decode_batch(items, transform, torch.device("cuda"))
    cpu, _, _ = decode_batch(items, transform, CPU)
    assert cuda.device.type == "cuda" and kept == [0, 1, 2]
    assert (cuda.cpu().float() - cpu.float()).abs().mean() < 3  # nvJPEG against libjpeg


def test_the_loader_decodes_on_the_device_what_its_workers_read(tmp_path):
    """The whole path on the CPU: a worker process reads bytes, the main process decodes and
    transforms; the same labels, the same crops as the workers' PIL path (class folders of
    JPEGs, PNGs and others, all noisy flat colours: a draw apart still looks alike, so the
    labels and the tolerance are what this checks, the crops are checked above)."""
    from cnnkit.data.imagefolder import FolderLoader, load
    from cnnkit.schema import DataConfig
    from tests.imagefiles import write_class_folders

    root = write_class_folders(tmp_path / "d", counts={"train": 5, "val": 1})
    data = load(DataConfig(name="imagefolder", root=str(root), image_size=16))
    transform = train_transform(data.cfg, mean=data.mean)

    def batches(on_device: bool) -> list:
        loader = FolderLoader(data.splits["train"], augment=True, transform=transform,
                              batch_size=4, shuffle=True, seed=3, mean=data.mean,
                              std=data.std, device=CPU, workers=1, skip_bad=False,
                              on_device=on_device)
        return list(loader.batches(epoch=1))

    for (a, y), (b, z) in zip(batches(True), batches(False), strict=True):
        assert torch.equal(y, z) and a.shape == b.shape == (len(y), 3, 16, 16)
        assert (a - b).abs().mean() < 0.1  # normalized units: about 6 of 255 in pixels
