"""The prepared device scripts under benchmarks/, smoke-run on CPU with tiny settings, so that a short GPU loan is
not the first time they run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_pretrain_plans_runs_and_reports_a_fra_run_within_its_budget(faces, tmp_path):
    env = {**os.environ, "PY": sys.executable, "DEVICE": "cpu", "DATA": str(faces), "ARCH": "resnet18",
           "WIDTH": "8", "SIZE": "32", "BATCH": "8", "BUDGET_S": "20", "OUT": str(tmp_path), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(["bash", "benchmarks/gpu_pretrain.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # a budget shorter than the timing run leaves the 10 steps a run never goes below
    assert re.search(r"s left: 10 steps", (tmp_path / "plan.txt").read_text())
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.startswith("steps 10,") and "hm_maxprob" in summary
    config = yaml.safe_load((tmp_path / "fra" / "config.yaml").read_text())
    # the regions recipe's one departure: weight decay on the trunk only, so LARS cannot shrink the queries to zero
    assert config["optim"]["weight_decay_scope"] == "trunk" and config["optim"]["weight_decay"] == 1e-4
    assert config["train"]["steps"] == 10 and config["data"]["image_size"] == 32
    assert (tmp_path / "fra" / "checkpoints").is_dir()
