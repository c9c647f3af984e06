"""The written results of a sweep (results.csv, results.md, plots/) and `frafer results` over any run folders."""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from frafer.errors import FraferError
from frafer.eval.reports import markdown_table
from frafer.experiments.heatmap_panels import sweep_heatmap_panels
from frafer.experiments.plots import plot_curves, plot_metric_against_axes, plot_metric_by_setting
from frafer.experiments.sweep_spec import Sweep, load_sweep
from frafer.experiments.tables import (
    default_metrics,
    flat_config,
    run_metrics,
    summarise,
    sweep_rows,
    value_key,
    write_csv,
)
from frafer.files import atomic_write_text


def write_sweep_results(sweep: Sweep, sweep_dir: Path) -> str:
    """results.csv (a row per point), results.md (seeds and the sweep's other replicates folded) and plots/
    (metrics against axes and by setting, curves, the FRA runs' heatmaps on the same faces); returns the Markdown
    table."""
    rows = sweep_rows(sweep, sweep_dir)
    metrics = default_metrics(rows, sweep.metrics)
    write_csv(rows, sweep_dir / "results.csv")
    keep = sweep.settings_axes  # the seeds and any other replicate axis are folded into mean ± std
    table = markdown_table(summarise(rows, keep, metrics), [*keep, "seeds", *metrics])
    atomic_write_text(sweep_dir / "results.md", f"# sweep {sweep.name}\n\n{table}\n")
    plot_metric_against_axes(rows, keep, metrics, sweep_dir / "plots")
    plot_metric_by_setting(rows, keep, metrics, sweep_dir / "plots")
    plot_curves(sweep, sweep_dir, sweep_dir / "plots")
    sweep_heatmap_panels(sweep, sweep_dir, sweep_dir / "plots")
    return table


IGNORED_KEYS = ("train.name", "train.out_dir", "train.device", "train.threads", "train.tensorboard", "data.num_workers")


def _shorten_paths(rows: list[dict], key: str) -> None:
    """Folder-valued keys (`model.init`) relative to the folder their values share, so columns and legends say
    `fra_seed0`, not the whole path; other values (`none`) stay as they are."""
    paths = {r[key] for r in rows if isinstance(r.get(key), str) and "/" in r[key]}
    if not paths:
        return
    parent = PurePath(os.path.commonpath(list(paths))) if len(paths) > 1 else PurePath(next(iter(paths))).parent
    for row in rows:
        if row.get(key) in paths:
            row[key] = str(PurePath(row[key]).relative_to(parent))


def runs_rows(run_dirs: list[Path], fold: list[str] = ()) -> tuple[list[dict], list[str]]:
    """Any run folders as rows: the config keys that differ between them (folder values shortened), then every
    metric they report; and those keys, less the `fold` keys (a fold key the runs share folds nothing and is fine;
    one no run has is a typo)."""
    missing = [d for d in run_dirs if not d.is_dir()]
    if missing:
        raise FraferError(f"{missing[0]} is not a folder")
    configs = [flat_config(d) for d in run_dirs]
    keys = sorted({k for c in configs for k in c} - set(IGNORED_KEYS))
    differing = [k for k in keys if len({value_key(c.get(k)) for c in configs}) > 1]
    rows = [{"run": run_dir.name, **{k: config.get(k) for k in differing}, **run_metrics(run_dir), "status": "ok"}
            for run_dir, config in zip(run_dirs, configs, strict=True)]
    for key in differing:
        _shorten_paths(rows, key)
    for key in fold:
        if key not in keys:
            raise FraferError(f"--fold {key}: no such config key in these runs")
    return rows, [k for k in differing if k not in fold]


def _chosen_metrics(rows: list[dict], metrics: list[str]) -> list[str]:
    chosen = default_metrics(rows, list(metrics))
    if not any(isinstance(r.get(m), float) for r in rows for m in chosen):
        raise FraferError(f"none of these folders reports {', '.join(chosen) or 'a metric'} (results.json or "
                          "metrics.jsonl): are they run folders?")
    return chosen


def runs_table(run_dirs: list[Path], metrics: list[str] = (), fold: list[str] = ()) -> str:
    """Any run folders side by side: the config keys that differ between them, then their metrics; runs that differ
    only in `fold` keys (label subsets, seeds) are one row, each metric as mean ± std. A sweep folder given here
    prints its own table, read from the folder alone (its runs record their own configs)."""
    if len(run_dirs) == 1 and (run_dirs[0] / "sweep.yaml").is_file():
        sweep = load_sweep(run_dirs[0] / "sweep.yaml", check_configs=False)
        return write_sweep_results(sweep, run_dirs[0])
    rows, keep = runs_rows(run_dirs, fold)
    chosen = _chosen_metrics(rows, metrics)
    if not fold:
        return markdown_table(rows, ["run", *keep, *chosen])
    return markdown_table(summarise(rows, keep, chosen), [*keep, "seeds", *chosen])


def plot_runs(run_dirs: list[Path], against: str, folder: Path, metrics: list[str] = (),
              fold: list[str] = ()) -> list[Path]:
    """Each metric against one config key (the label fraction), a line per setting of the other keys that differ,
    the `fold` keys folded into error bars: `frafer results --plot`."""
    rows, keep = runs_rows(run_dirs, fold)
    if against not in keep:
        raise FraferError(f"--plot {against}: not a config key that differs between these runs "
                          f"(those are: {', '.join(keep) or 'none'})")
    return plot_metric_against_axes(rows, keep, _chosen_metrics(rows, metrics), folder, against=[against])
