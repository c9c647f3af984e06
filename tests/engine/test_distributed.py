"""Two gloo processes on a split batch = one process on the whole batch: same loss, same gradients.

This covers every place FRA couples the global batch: synchronised batch-norm, the shared mask mean, the Sinkhorn
sums and the mean-entropy average — and that gradients flow through all of them across processes.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from frafer.losses.fra_loss import fra_loss
from frafer.methods.fra import LossConfig
from frafer.models.fra_networks import FRA
from frafer.models.norm import convert_to_global_bn
from tests.conftest import tiny_model_config

BATCH, WORLD = 8, 2
LOSS = LossConfig(diversity_weight=0.01)


def _inputs(layout=torch.contiguous_format):
    g = torch.Generator().manual_seed(123)
    views = torch.randn(BATCH, 3, 32, 32, generator=g), torch.randn(BATCH, 3, 32, 32, generator=g)
    return tuple(v.contiguous(memory_format=layout) for v in views)


def _model(layout=torch.contiguous_format):
    torch.manual_seed(0)
    return FRA(tiny_model_config()).to(memory_format=layout)  # channels_last: train.channels_last's layout


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank: int, port: int, out_path: str, layout) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    model = convert_to_global_bn(_model(layout), torch.device("cpu"))
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    x1, x2 = _inputs(layout)
    part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    loss, parts = fra_loss(ddp(x1[part], x2[part]), LOSS)
    loss.backward()
    mean_parts = {}
    for k, v in parts.items():
        v = v.clone()
        dist.all_reduce(v)
        mean_parts[k] = v / WORLD
    if rank == 0:
        torch.save({"parts": mean_parts, "grads": _grads(model)}, out_path)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_two_processes_match_one(tmp_path, layout):
    out_path = str(tmp_path / "ddp.pt")
    mp.spawn(_worker, args=(_free_port(), out_path, layout), nprocs=WORLD, join=True)
    ddp = torch.load(out_path, weights_only=True)

    model = _model(layout)
    x1, x2 = _inputs(layout)
    loss, parts = fra_loss(model(x1, x2), LOSS)
    loss.backward()
    single = _grads(model)

    for k in ("loss", "inst", "local", "relation", "rel_me", "diversity"):
        assert ddp["parts"][k].item() == pytest.approx(parts[k].item(), rel=1e-4, abs=1e-5), k
    assert set(ddp["grads"]) == set(single)
    for name, g in single.items():
        # Float rounding grows with the gradient's own scale (the stem's sums run over every pixel of the batch).
        scale = max(1.0, g.abs().max().item())
        assert torch.allclose(ddp["grads"][name], g, rtol=1e-3, atol=2e-5 * scale), name
    # The shared masks and batch-norm make the decoder and projector gradients depend on the other half:
    # a wrong all-reduce would show here.
    assert single["online.decoder.queries"].abs().sum() > 0


@pytest.mark.slow
def test_torchrun_pretrain_end_to_end(tmp_path):
    """`torchrun --nproc_per_node=2 -m frafer pretrain …` on CPU (gloo): one run folder, one checkpoint."""
    import subprocess
    import sys

    from tests.conftest import TINY_PRETRAIN as TINY

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
        "-m", "frafer", "pretrain", "--run-dir", str(tmp_path / "run"), *TINY, "data.source=synthetic",
        "data.synthetic.num_images=32", "train.epochs=2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("completed at step 8") == 1  # 32 images / global batch 8 × 2 epochs; printed once
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*"))
    assert checkpoints == ["step_00000008"]


@pytest.mark.slow
def test_torchrun_finetune_end_to_end(tmp_path):
    """`torchrun --nproc_per_node=2 -m frafer finetune …` (gloo): the global batch splits over two processes, one
    process evaluates and writes the bundle, and the result lands once."""
    import json
    import subprocess
    import sys

    from frafer.data.synthetic.renderer import write_synthetic_dataset
    from tests.conftest import TINY_FINETUNE as TINY

    train = write_synthetic_dataset(tmp_path / "train", 32, size=32, num_identities=8, seed=0, usage="Training")
    test = write_synthetic_dataset(tmp_path / "test", 12, size=32, num_identities=4, seed=2, identity_offset=8,
                                   usage="PrivateTest")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(_free_port()),
        "-m", "frafer", "finetune", "--run-dir", str(tmp_path / "run"), *TINY, f"data.root={train}",
        f"data.extra_roots=[{test}]", "data.val_fraction=0.25", "train.epochs=2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("completed at step") == 1
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["last"]["test"]["count"] == 12
    assert (tmp_path / "run" / "model" / "bundle.json").is_file()


def _moco():
    from frafer.methods.moco_v2 import MocoConfig
    from frafer.models.moco import MoCo

    torch.manual_seed(0)
    return MoCo(tiny_model_config(), MocoConfig(dim=8, hidden_dim=16, queue_size=32, bn_batch=BATCH // WORLD))


def _moco_loss(out):
    from frafer.losses.info_nce import info_nce

    return info_nce(out["query"], out["key"], out["negatives"], 0.2)


def _moco_worker(rank: int, port: int, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    model = _moco()
    ddp = DistributedDataParallel(model, broadcast_buffers=False)
    x1, x2 = _inputs()
    part = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    loss = _moco_loss(ddp(x1[part], x2[part]))
    loss.backward()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    if rank == 0:
        torch.save({"loss": mean / WORLD, "grads": _grads(model), "queue": model.queue.clone()}, out_path)
    dist.destroy_process_group()


@pytest.mark.slow
def test_moco_two_processes_match_one(tmp_path):
    """Shuffle-BN across processes, the gathered keys in the queue and DDP's averaged gradients: two processes with
    half the batch each are one process with the whole batch in two BN batches."""
    out_path = str(tmp_path / "moco.pt")
    mp.spawn(_moco_worker, args=(_free_port(), out_path), nprocs=WORLD, join=True)
    ddp = torch.load(out_path, weights_only=True)

    model = _moco()
    x1, x2 = _inputs()
    loss = _moco_loss(model(x1, x2))
    loss.backward()
    single = _grads(model)
    assert ddp["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(ddp["queue"], model.queue, atol=1e-6)  # every process's keys, in the global order
    assert set(ddp["grads"]) == set(single)
    for name, g in single.items():
        assert torch.allclose(ddp["grads"][name], g, rtol=1e-3, atol=1e-6), name
