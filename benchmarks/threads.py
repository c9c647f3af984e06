"""Seconds for a few demo pre-training steps at 1 and 2 torch threads, on a quiet machine and beside a CPU-heavy
process: what the `train.threads` default trades, and what OpenMP's wait policy does to jobs that share cores.

Each timing is a fresh `frafer pretrain` process (the demo recipe, built-in synthetic faces, one data worker), so
start-up is included alike in every row; busy rows run beside a process multiplying matrices on every core.
`--wait-policy` runs every row twice: OpenMP's default (threads spin while they wait for work) and
OMP_WAIT_POLICY=PASSIVE (they sleep), set in both processes.

    .venv/bin/python benchmarks/threads.py [--steps 24] [--wait-policy]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUSY = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a @ a\n"


def _time_run(threads: int, steps: int, folder: Path, env: dict) -> float:
    cmd = [sys.executable, "-m", "frafer", "pretrain", "--config", "configs/demo.yaml", "--overwrite",
           "--run-dir", str(folder / "run"), "--threads", str(threads), f"train.steps={steps}",
           "optim.warmup_steps=2", "train.tensorboard=false", "data.synthetic.num_images=1024",
           "monitor.knn_at_start=false"]
    tick = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--wait-policy", action="store_true", help="also every row with OMP_WAIT_POLICY=PASSIVE")
    args = parser.parse_args()
    policies = ("default", "PASSIVE") if args.wait_policy else ("default",)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in policies:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            for busy in (False, True):
                other = subprocess.Popen([sys.executable, "-c", BUSY], env=env) if busy else None
                try:
                    time.sleep(2 if busy else 0)
                    for threads in (1, 2):
                        results[policy, busy, threads] = _time_run(threads, args.steps, Path(tmp), env)
                finally:
                    if other is not None:
                        other.kill()
    for policy in policies:
        for busy in (False, True):
            one, two = results[policy, busy, 1], results[policy, busy, 2]
            print(f"wait policy {policy:<7} {'busy ' if busy else 'quiet'} machine, {args.steps} steps: 1 thread "
                  f"{one:.1f} s, 2 threads {two:.1f} s (2 threads / 1 thread = {two / one:.2f})")
    if args.wait_policy:
        for busy in (False, True):
            for threads in (1, 2):
                ratio = results["PASSIVE", busy, threads] / results["default", busy, threads]
                print(f"{'busy ' if busy else 'quiet'}, {threads} thread(s): PASSIVE / default time = {ratio:.2f}")


if __name__ == "__main__":
    main()
