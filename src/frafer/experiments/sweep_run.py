"""Run a sweep: every point's stages in order, each as its own `python -m frafer` process.

    <sweep>/sweep.yaml               the sweep file as last run (a rerun may change its points, not its stages)
    <sweep>/data/                    prepared data (prepare: demo-data)
    <sweep>/runs/<point>/<stage>/    the stage's run folder; <stage>.log its output
    <sweep>/runs/<point>/<stage>.json  written when the stage ends: status ok or failed, exit code, seconds, log tail

A process per stage keeps one failure (an error, a NaN, out of memory) from taking the sweep down: it is recorded and
the point's later stages are skipped, while the other points go on. A rerun skips stages that ended ok, resumes a
stage that was killed (from its last checkpoint, or afresh without one) and retries failed ones. With several
devices, points run concurrently, one per device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from frafer.errors import FraferError
from frafer.experiments.sweep_spec import Point, Stage, Sweep, expand, load_sweep, require_env, stage_dir, stage_status
from frafer.files import atomic_write_text

LOG_TAIL = 2000  # characters of a failed stage's output kept in its status file
# What a sweep folder's runs depend on. Points, grid and metrics may change between runs of one folder: a stage's
# folder is named by the settings that reach it, so a point added later reuses every stage it shares.
SWEEP_IDENTITY = ("name", "prepare", "stages")


def prepare_data(sweep: Sweep, sweep_dir: Path) -> Path:
    data = sweep_dir / "data"
    if sweep.prepare == "demo-data":
        from frafer.config.loader import load_config
        from frafer.demo import write_demo_data

        if sweep.stages[0].command != "pretrain":
            raise FraferError("prepare: demo-data needs a pretrain first stage (its recipe's data.synthetic and "
                              "image size are what is written)")
        base = load_config(sweep.stages[0].config)
        syn = base.data.synthetic
        write_demo_data(data, base.data.image_size, syn.num_images, syn.num_identities, syn.seed,
                        syn.expression_gain)
    return data


def stage_command(sweep: Sweep, stage: Stage, point: Point, sweep_dir: Path, data_dir: Path, device: str) -> list[str]:
    run_dir = stage_dir(sweep, sweep_dir, point, stage.name)
    overrides = [expand(o, sweep_dir, data_dir) for o in stage.overrides] + point.overrides_for(stage.name)
    if stage.init and not any(o.startswith("model.init=") for o in point.overrides_for(stage.name)):
        overrides.append(f"model.init={stage_dir(sweep, sweep_dir, point, stage.init)}")
    if device:
        overrides.append(f"train.device={device}")
    base = [sys.executable, "-m", "frafer", stage.command]
    if (run_dir / "config.yaml").is_file() and any((run_dir / "checkpoints").glob("*")):
        return [*base, "--resume", str(run_dir), *overrides]
    return [*base, "--config", str(stage.config), "--run-dir", str(run_dir), "--overwrite", *overrides]


def run_stage(sweep: Sweep, stage: Stage, point: Point, sweep_dir: Path, data_dir: Path, device: str) -> dict:
    run_dir = stage_dir(sweep, sweep_dir, point, stage.name)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = stage_command(sweep, stage, point, sweep_dir, data_dir, device)
    log = run_dir.with_suffix(".log")
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=_child_env()).returncode
    status = {"status": "ok" if code == 0 else "failed", "returncode": code,
              "seconds": round(time.perf_counter() - start, 1), "command": command}
    if code:
        status["log_tail"] = log.read_text(errors="replace")[-LOG_TAIL:]
    atomic_write_text(run_dir.with_suffix(".json"), json.dumps(status, indent=2))
    return status


def _child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class SharedRuns:
    """Stage folders several points share, within one `run_sweep`: a lock each, and which ones ran already."""

    def __init__(self) -> None:
        self._locks: dict[Path, threading.Lock] = {}
        self._guard = threading.Lock()
        self.attempted: set[Path] = set()

    def lock(self, run_dir: Path) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(run_dir, threading.Lock())


def run_point(sweep: Sweep, point: Point, sweep_dir: Path, data_dir: Path, device: str, say,
              shared: SharedRuns | None = None) -> str:
    """Run the point's unfinished stages in order; returns ok, or the first failed stage's name.

    A stage shared with another point (`stage_dir`) runs once: a point that finds it ended ok reuses it, and one
    that finds it failed in this same sweep run fails with it (the next rerun of the sweep retries it).
    """
    shared = shared or SharedRuns()
    for stage in sweep.stages:
        run_dir = stage_dir(sweep, sweep_dir, point, stage.name)
        with shared.lock(run_dir):
            status = stage_status(sweep, sweep_dir, point, stage.name)
            fresh = status is None or (status["status"] != "ok" and run_dir not in shared.attempted)
            if fresh:
                say(f"{point.name}: {stage.name} …")
                shared.attempted.add(run_dir)
                status = run_stage(sweep, stage, point, sweep_dir, data_dir, device)
        if status["status"] != "ok":
            say(f"{point.name}: {stage.name} FAILED (exit {status['returncode']}); log: {run_dir.with_suffix('.log')}")
            return stage.name
        if fresh:
            say(f"{point.name}: {stage.name} done in {status['seconds']:.0f} s")
    return "ok"


def run_sweep(path: str | Path, out: str | Path, devices: list[str] | None = None) -> dict:
    """Run (or continue) the sweep of `path` in folder `out`; returns {point name: ok | failed stage}."""
    sweep = load_sweep(path)
    require_env(sweep)
    sweep_dir = Path(out).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    recorded = sweep_dir / "sweep.yaml"
    if recorded.is_file():
        before = yaml.safe_load(recorded.read_text()) or {}
        changed = [k for k in SWEEP_IDENTITY if before.get(k) != sweep.tree.get(k)]
        if changed:
            raise FraferError(f"{sweep_dir} holds another sweep (its sweep.yaml has other {' and '.join(changed)} "
                              f"than {sweep.path}); use a new folder")
    atomic_write_text(recorded, sweep.resolved_yaml())
    data_dir = prepare_data(sweep, sweep_dir)
    devices = devices or [""]
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock:
            print(message, flush=True)

    todo = [p for p in sweep.points
            if not all((stage_status(sweep, sweep_dir, p, s.name) or {}).get("status") == "ok" for s in sweep.stages)]
    say(f"sweep {sweep.name}: {len(sweep.points)} points × {len(sweep.stages)} stages, {len(todo)} points to run, "
        f"in {sweep_dir}")
    free, shared = list(devices), SharedRuns()
    outcome = {p.name: "ok" for p in sweep.points if p not in todo}

    def work(point: Point) -> None:
        with lock:
            device = free.pop(0)
        try:
            outcome[point.name] = run_point(sweep, point, sweep_dir, data_dir, device, say, shared)
        finally:
            with lock:
                free.append(device)

    with ThreadPoolExecutor(max_workers=len(devices)) as pool:
        for future in [pool.submit(work, p) for p in todo]:
            future.result()
    return {p.name: outcome[p.name] for p in sweep.points}  # in sweep order, however the points finished
