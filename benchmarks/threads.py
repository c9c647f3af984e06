"""Seconds for a few demo pre-training steps at 1 and 2 torch threads, on a quiet machine and beside a CPU-heavy
process: what the `train.threads` default trades.

Each timing is a fresh `frafer pretrain` process (the demo recipe, built-in synthetic faces, one data worker), so
start-up is included alike in every row; `--busy` rows run beside a process multiplying matrices on every core.

    .venv/bin/python benchmarks/threads.py [--steps 24]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"


def _time_run(threads: int, steps: int, folder: Path) -> float:
    cmd = [sys.executable, "-m", "frafer", "pretrain", "--config", "configs/demo.yaml", "--overwrite",
           "--run-dir", str(folder / "run"), "--threads", str(threads), f"train.steps={steps}",
           "optim.warmup_steps=2", "train.tensorboard=false", "data.synthetic.num_images=1024",
           "monitor.knn_at_start=false"]
    tick = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for busy in (False, True):
            other = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
            try:
                time.sleep(2 if busy else 0)
                for threads in (1, 2):
                    results[busy, threads] = _time_run(threads, args.steps, Path(tmp))
            finally:
                if other is not None:
                    other.kill()
    for busy in (False, True):
        one, two = results[busy, 1], results[busy, 2]
        print(f"{'busy ' if busy else 'quiet'} machine, {args.steps} steps: 1 thread {one:.1f} s, 2 threads "
              f"{two:.1f} s (2 threads / 1 thread = {two / one:.2f})")


if __name__ == "__main__":
    main()
