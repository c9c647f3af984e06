"""Short runs on built-in synthetic faces learn: the loss falls and kNN beats the random-init network.

The kNN labels are identities the pre-training never saw (half of each identity's images are the memory bank, the
other half are classified), the check docs/method.md's verification monitor makes on real faces. Expression kNN moves
too, but by less than its noise at this size (see the README's demo table for the 64 px figures).
"""

import csv
import json
import shutil

import pytest

from frafer.config.loader import load_config
from frafer.data.synthetic.renderer import write_synthetic_dataset
from frafer.train.pretrain import pretrain
from tests.conftest import TINY_PRETRAIN as TINY

SEEDS = (0, 1, 2)


def identity_folders(src, bank, val):
    """Re-file a synthetic dataset by identity: even-numbered images of each identity → bank, odd → val."""
    with open(src / "meta.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    seen: dict[str, int] = {}
    for row in rows:
        identity = row["identity"]
        k = seen[identity] = seen.get(identity, -1) + 1
        folder = (bank if k % 2 == 0 else val) / f"id{identity}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / row["Image name"], folder / row["Image name"].replace("/", "_"))


def short_runs(tmp_path, method_settings: list[str], seeds=SEEDS) -> tuple[list[list[float]], list[float]]:
    """256 steps of 32 per seed on 4096 synthetic faces; (each run's logged losses, each run's kNN lift)."""
    faces = write_synthetic_dataset(tmp_path / "faces", num_images=480, size=32, num_identities=30, seed=2,
                                    identity_offset=700)
    identity_folders(faces, tmp_path / "bank", tmp_path / "val")
    losses, lifts = [], []
    for seed in seeds:
        cfg = load_config(None, [
            *TINY, "data.source=synthetic", "data.synthetic.num_images=4096", "data.synthetic.num_identities=200",
            "train.batch_size=32", "train.epochs=2", "train.log_every=8", f"train.seed={seed}",
            # the demo recipe (configs/demo.yaml): small crops or sigma-2 blur erase a 32 px face's details
            "aug.crop_scale=[0.8,1.0]", "aug.blur_sigma=[0.1,0.6]",
            "monitor.knn_at_start=true", "monitor.knn_every_epochs=2", "monitor.knn_k=10",
            f"monitor.knn_train_root={tmp_path / 'bank'}", f"monitor.knn_val_root={tmp_path / 'val'}",
            *method_settings,
        ])
        result = pretrain(cfg, tmp_path / f"run{seed}")
        assert result.step == 256 and result.stopped == "completed"
        lines = [json.loads(x) for x in (tmp_path / f"run{seed}" / "metrics.jsonl").read_text().splitlines()]
        losses.append([x["loss"] for x in lines if x["kind"] == "train"])
        # step 0 is the random-init network; about 240 queries over 30 identities (chance 3.3 %)
        assert [k["step"] for k in result.knn] == [0, 256]
        assert all(k["knn_skipped"] == 0 for k in result.knn)
        lifts.append(result.knn[-1]["knn_top1"] - result.knn[0]["knn_top1"])
    return losses, lifts


@pytest.mark.slow
def test_short_synthetic_runs_lower_the_loss_and_lift_knn(tmp_path):
    # the method's LARS eta 1e-3 barely moves a trunk in a few hundred steps: the demo's 0.01
    losses, lifts = short_runs(tmp_path, ["optim.lars_eta=0.01"])
    for seed, run in zip(SEEDS, losses, strict=True):
        assert sum(run[-4:]) / 4 < 0.8 * sum(run[:2]) / 2, seed
    # Measured lifts for seeds 0-3: +0.4, +6.5, +13.5, +10.9 points on an Intel AVX-512 machine; seeds 0-2 on an
    # AMD EPYC one (same code, same threads, other kernels): -1.3, -2.2, +11.3. One run's lift depends on its random
    # path by more than one kNN's noise (about 2.3 points here), so the test asserts the mean over seeds, with a
    # margin that both machines' means (+6.8, +2.6) clear.
    assert sum(lifts) / len(lifts) >= 1.0, lifts


@pytest.mark.slow
def test_short_moco_runs_lower_the_loss_and_lift_knn(tmp_path):
    # MoCo's 0.03 per 256 images is 0.004 at batch 32: too little for 256 steps (seed 0: kNN +3.0 points against
    # +12.6 at 0.3)
    # Two seeds, to keep `make test` short: seeds 0-2 on the AMD machine lifted kNN by +12.6, +7.4, +16.1 points and
    # lowered the loss by 0.22, 0.24, 0.14, so the mean of any two clears the margin below by far.
    seeds = SEEDS[:2]
    losses, lifts = short_runs(tmp_path, ["method=moco_v2", "moco.dim=16", "moco.queue_size=256",
                                          "moco.bn_batch=16", "optim.base_lr=0.3"], seeds)
    for seed, run in zip(seeds, losses, strict=True):
        # InfoNCE starts near log(queue + 1) = 5.55 and falls slowly; seed 0 fell by 0.22
        assert sum(run[-4:]) / 4 < sum(run[:2]) / 2 - 0.1, seed
    assert sum(lifts) / len(lifts) >= 3.0, lifts
