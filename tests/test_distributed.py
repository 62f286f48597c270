"""Data-parallel training: sharding arithmetic, and a real 2-process gloo run that must end
where a 1-process run at the same global batch ends, with rank 0 alone writing files."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from cnnkit.data.shards import batches_per_epoch, shard_bounds
from cnnkit.data.tensors import Split, TensorLoader, epoch_permutation
from cnnkit.rundir.lock import read_manifest
from cnnkit.training.distributed import loss_weight
from cnnkit.training.trainer import train
from tests.conftest import ROOT, SMALL_CONV

CPU = torch.device("cpu")


@pytest.mark.parametrize("n", [0, 1, 5, 10, 11])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_tensor_split(n, world):
    expected = [part.tolist() for part in torch.arange(n).tensor_split(world)]
    assert [list(range(*shard_bounds(n, r, world))) for r in range(world)] == expected


def test_loss_weights_make_ddp_mean_the_global_mean():
    sizes = [4, 3]  # a last batch of 7 over 2 ranks
    weights = [loss_weight(n, 7, 2) for n in sizes]
    assert sum(w / 2 for w in weights) == pytest.approx(1.0)  # DDP averages over 2 ranks
    assert [w / 2 for w in weights] == pytest.approx([4 / 7, 3 / 7])
    assert loss_weight(5, 7, 1) == 1.0


def loader(rank, world, n=23, batch=8):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    return TensorLoader(Split(images, torch.arange(n)), batch_size=batch, shuffle=True, seed=5,
                        mean=(0.0,), std=(1.0,), device=CPU, rank=rank, world_size=world)


def test_ranks_split_each_global_batch_of_the_epoch_permutation():
    single = [y for _, y in loader(0, 1).batches(2)]
    ranks = [[y for _, y in loader(r, 3).batches(2)] for r in range(3)]
    assert all(len(batches) == len(single) == 3 for batches in ranks)
    for step, whole in enumerate(single):
        assert torch.equal(torch.cat([ranks[r][step] for r in range(3)]), whole)
    assert torch.equal(torch.cat(single), epoch_permutation(23, seed=5, epoch=2))


def test_a_last_batch_smaller_than_the_world_is_left_out():
    # 17 = 2 × 8 + 1: one example cannot be split over 2 ranks that must step together
    assert len(loader(0, 2, n=17)) == len(loader(1, 2, n=17)) == 2
    assert len(loader(0, 1, n=17)) == 3


@pytest.mark.parametrize("n,batch", [(17, 8), (16, 8), (23, 8), (3, 8), (1, 4)])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_schedules_epoch_length_is_the_loaders(n, batch, world):
    # the trainer sizes its lr schedule with batches_per_epoch: it must count the steps taken
    assert batches_per_epoch(n, batch, world) == len(loader(0, world, n=n, batch=batch))


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]  # held open together: n distinct ports
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _worker(rank: int, world: int, ports: tuple[int, int], config: str, out: str,
            log_dir: str) -> None:
    """One torchrun-like rank: the environment torchrun would set, then cnnkit's train().

    Each train() call is one torchrun job, so each gets its own rendezvous port: on one port,
    a rank that finished the first job early could join the second through rank 0's store of
    the first job, still open while rank 0 writes its files, and wait there forever."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]))
    torch.set_num_threads(1)
    written = []
    real_replace = os.replace

    def spy(src, dst, *args, **kwargs):  # every file cnnkit writes ends in an os.replace
        written.append(Path(dst).name)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = spy
    train(config, out_dir=out, quiet=True, overrides=("train.epochs=1",))
    os.environ["MASTER_PORT"] = str(ports[1])
    train(config, out_dir=out, quiet=True, resume=True, overrides=("train.epochs=2",))
    os.replace = real_replace
    Path(log_dir, f"rank{rank}.json").write_text(json.dumps(written))


@pytest.mark.slow
def test_two_gloo_ranks_end_where_one_process_ends(write_config, tmp_path):
    # 1,000 = 4 × 230 + 80: uneven last batch (40 per rank), and a resume between epochs;
    # mixed: each rank mixes its part of the global batch as one process mixes the whole
    # (training/mixing.py: the previous rank's last image in front, the same draws). Without
    # mixing, 2 processes against 1 is tests/test_many_machines.py's two-node run (torchrun)
    config = {**SMALL_CONV, "train": {**SMALL_CONV["train"], "batch_size": 230}}
    config["data"] = {**config.get("data", {}),
                      "augment": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0}}
    path = write_config(config)
    torch.set_num_threads(1)
    single = train(path, out_dir=tmp_path / "one", quiet=True, overrides=("train.epochs=2",))
    args = (2, tuple(_free_ports(2)), str(path), str(tmp_path / "two"), str(tmp_path))
    ranks = mp.start_processes(_worker, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 300  # a lost rendezvous fails the test instead of hanging
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the 2-rank run did not finish in 300 s")
    parallel = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(parallel["model"][name], value, rtol=1e-4, atol=1e-5,
                                   msg=name)
    rows = [r["val_loss"] for r in parallel["history"]]
    assert rows == pytest.approx([r["val_loss"] for r in single.history], rel=1e-4)
    assert parallel["history"][0]["train_acc"] == pytest.approx(
        single.history[0]["train_acc"], abs=2e-3)  # over all 1,000 examples, not one shard
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    assert {"last.pt", "best.pt", "metrics.csv", "curves.png", "config.yaml"} <= set(rank0)
    assert json.loads((tmp_path / "rank1.json").read_text()) == []


@pytest.mark.slow
def test_torchrun_command_trains(write_config, tmp_path):
    path = write_config()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_port", str(_free_ports(1)[0]), "-m", "cnnkit", "train",
                           str(path), "--out", str(tmp_path / "run"), "--set",
                           "train.epochs=1", "--set", "data.train_size=200", "--set",
                           "data.val_size=100"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("epoch   1/1") == 1  # rank 0 alone prints
    assert (tmp_path / "run" / "last.pt").is_file()
    # rank 0 alone locks the directory and keeps its manifest and log: one header, one holder
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and manifest["epoch"] == 1
    assert (tmp_path / "run" / "train.log").read_text().count("run directory ") == 1


def test_sharded_batches_equal_reference_slicing_with_real_normalization():
    from cnnkit.data import build_data
    from cnnkit.schema import DataConfig

    data = build_data(DataConfig(train_size=300, val_size=100))
    split, mean, std = data.splits["train"], data.mean[0], data.std[0]
    order = epoch_permutation(300, seed=7, epoch=4)
    for rank in (0, 1):
        got = list(data.loader("train", batch_size=128, shuffle=True, seed=7, device=CPU,
                               rank=rank, world_size=2).batches(4))
        for step, (x, y) in enumerate(got):
            lo = step * 128
            a, b = shard_bounds(min(128, 300 - lo), rank, 2)
            index = order[lo + a:lo + b]
            reference = (split.images[index].float() / 255 - mean) / std
            torch.testing.assert_close(x, reference)
            assert torch.equal(y, split.labels[index])


def test_a_global_batch_smaller_than_the_world_is_refused():
    from cnnkit.errors import ConfigError
    from cnnkit.training.distributed import Cluster, check_batch

    with pytest.raises(ConfigError, match="train.batch_size: 2 is the global batch and cannot "
                                          "be split over 4 processes"):
        check_batch(2, Cluster(world_size=4))
    check_batch(4, Cluster(world_size=4))
