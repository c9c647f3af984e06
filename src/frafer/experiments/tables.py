"""Results of many runs as one table: a sweep's points, or any run folders side by side.

A run's numbers come from the files every run writes: `results.json` (fine-tune, probe: `last` and `best_val`,
each with val / test reports) and `metrics.jsonl` (pre-training: the last train line and monitors). A metric is
named by its path in them, e.g. `best_val.test.top1`, `last.val.macro_f1`, `train.loss` (the last logged; also
`train.hm_entropy`, `train.diversity`, …), `knn.top1`, `verify.accuracy` (the last monitors); in a sweep,
prefixed by the stage: `finetune.best_val.test.top1`, `pretrain.knn.top1`.

Seeds are an axis like any other, except in tables: rows that differ only in the seed are one row, each metric as
mean ± std (sample std, n − 1) with the seed count, so every comparison shows its spread.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from frafer.experiments.sweep_spec import Sweep, stage_dir, stage_status
from frafer.files import atomic_write_text

REPORT_METRICS = ("top1", "macro_f1", "mean_class_acc")
TRAIN_STATS = ("hm_entropy", "hm_maxprob", "diversity", "wce", "soft", "sp", "aux")


def run_metrics(run_dir: Path) -> dict[str, float]:
    """Every number a run folder reports, flat: `best_val.test.top1`, …, `train.loss`, `knn.top1`."""
    out: dict[str, float] = {}
    results = run_dir / "results.json"
    if results.is_file():
        tree = json.loads(results.read_text())
        for which in ("last", "best_val"):
            for split in ("val", "test"):
                report = (tree.get(which) or {}).get(split) or {}
                for metric in REPORT_METRICS:
                    if isinstance(report.get(metric), (int, float)):
                        out[f"{which}.{split}.{metric}"] = float(report[metric])
    train, knn, verify = None, None, None
    for row in metric_lines(run_dir):
        if row.get("kind") == "train":
            train = row
        elif "knn_top1" in row:
            knn = row
        elif "verify_accuracy" in row:
            verify = row
    if train is not None:
        out["train.loss"] = float(train["loss"])
        out["train.step"] = float(train["step"])
        for key in TRAIN_STATS:  # FRA's heatmap sharpness and region usage, DMUE's terms, where logged
            if isinstance(train.get(key), (int, float)):
                out[f"train.{key}"] = float(train[key])
    if knn is not None:
        out["knn.top1"] = float(knn["knn_top1"])
    if verify is not None:
        out["verify.accuracy"] = float(verify["verify_accuracy"])
    return out


def metric_lines(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (none when it has none; a line cut by a kill is left out)."""
    path = run_dir / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


# Curves a sweep overlays, as (the kind of metrics line, the key): the training loss and heatmap sharpness, the
# kNN and verification monitors, the validation accuracy.
CURVES = (("train", "loss"), ("train", "hm_entropy"), ("monitor", "knn_top1"), ("monitor", "verify_accuracy"),
          ("val", "val_top1"))


def curve(run_dir: Path, kind: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of `key` on the run's metrics lines of `kind`."""
    rows = [r for r in metric_lines(run_dir) if r.get("kind") == kind and isinstance(r.get(key), (int, float))]
    return [int(r["step"]) for r in rows], [float(r[key]) for r in rows]


def sweep_rows(sweep: Sweep, sweep_dir: Path) -> list[dict]:
    """A row per point: its axis values, status, and every stage's metrics prefixed by the stage name."""
    rows = []
    for point in sweep.points:
        row: dict = dict(point.values)
        problem = ""
        for stage in sweep.stages:
            status = stage_status(sweep, sweep_dir, point, stage.name)
            if status is None or status["status"] != "ok":
                problem = problem or f"{stage.name} {'not run' if status is None else 'failed'}"
            if status is None:
                continue
            for key, value in run_metrics(stage_dir(sweep, sweep_dir, point, stage.name)).items():
                row[f"{stage.name}.{key}"] = value
        row["status"] = problem or "ok"
        rows.append(row)
    return rows


def summarise(rows: list[dict], axes: list[str], metrics: list[str]) -> list[dict]:
    """Rows that differ only in `seed` → one row: mean ± std of each metric over the seeds that finished."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    keep = [a for a in axes if a != "seed"]
    for row in rows:
        groups[tuple(value_key(row.get(a)) for a in keep)].append(row)
    table = []
    for members in groups.values():
        out = {a: axis_text(members[0].get(a)) for a in keep}
        ok = [m for m in members if m.get("status") == "ok"]
        out["seeds"] = f"{len(ok)}/{len(members)}"
        for metric in metrics:
            values = [m[metric] for m in ok if isinstance(m.get(metric), float)]
            out[metric] = mean_std_text(values)
        table.append(out)
    return table


def axis_text(value) -> str:
    """A swept value as the sweep file gave it: 4.89e-05 and 0.001, not 0.00; a null as `(recipe)`, the stage's own."""
    if value is None:
        return "(recipe)"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).lower() if isinstance(value, bool) else str(value)


def value_key(value):
    return json.dumps(value, sort_keys=True, default=str)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std_text(values: list[float]) -> str:
    """`mean ± std` with 2 decimals, more when the spread needs them (2 significant digits of the std, at most 6):
    a heatmap entropy of 2.0794 ± 0.0002 must not print as 2.08 ± 0.00."""
    if not values:
        return ""
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    decimals = 2 if std <= 0 or std >= 0.1 else min(6, 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def default_metrics(rows: list[dict], wanted: list[str]) -> list[str]:
    if wanted:
        return wanted
    present = list(dict.fromkeys(k for r in rows for k, v in r.items() if isinstance(v, float)))
    preferred = [k for k in present if k.endswith(("best_val.val.top1", "best_val.test.top1", "knn.top1"))]
    return preferred or present[:4]


def write_csv(rows: list[dict], path: Path) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def flat_config(run_dir: Path) -> dict:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    flat: dict = {}

    def walk(tree, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(yaml.safe_load(path.read_text()) or {}, "")
    return flat
