"""A short run on built-in synthetic faces: the loss falls and the kNN monitor reports before and after."""

import json

import pytest

from frafer.config import load_config
from frafer.data.synthetic import write_synthetic_dataset
from frafer.train.pretrain import pretrain
from tests.test_pretrain import TINY


@pytest.mark.slow
def test_short_synthetic_run_lowers_the_loss(tmp_path):
    bank = write_synthetic_dataset(tmp_path / "bank", num_images=70, size=32, num_identities=10, identity_offset=500)
    val = write_synthetic_dataset(tmp_path / "val", num_images=35, size=32, num_identities=5, seed=1,
                                  identity_offset=600)
    cfg = load_config(None, [
        *TINY, "data.source=synthetic", "data.synthetic.num_images=128", "data.synthetic.num_identities=20",
        "train.batch_size=16", "train.epochs=4", "monitor.knn_at_start=true", "monitor.knn_every_epochs=4",
        f"monitor.knn_train_root={bank}", f"monitor.knn_val_root={val}", "monitor.knn_k=5",
    ])
    result = pretrain(cfg, tmp_path / "run")
    assert result.step == 32 and result.stopped == "completed"
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if x["kind"] == "train"]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:4]) / 4
    # The monitor ran on the random-init network (step 0) and at the end, on held-out identities.
    assert [k["step"] for k in result.knn] == [0, 32]
    assert all(0.0 <= k["knn_top1"] <= 100.0 and k["knn_skipped"] == 0 for k in result.knn)
