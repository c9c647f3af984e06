"""The written results of a sweep (results.csv, results.md, plots/) and `frafer results` over any run folders."""

from __future__ import annotations

from pathlib import Path

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


def runs_table(run_dirs: list[Path], metrics: list[str] = ()) -> str:
    """Any run folders side by side: the config keys that differ between them, then their metrics. A sweep folder
    given here prints its own table, read from the folder alone (its runs record their own configs)."""
    if len(run_dirs) == 1 and (run_dirs[0] / "sweep.yaml").is_file():
        sweep = load_sweep(run_dirs[0] / "sweep.yaml", check_configs=False)
        return write_sweep_results(sweep, run_dirs[0])
    missing = [d for d in run_dirs if not d.is_dir()]
    if missing:
        raise FraferError(f"{missing[0]} is not a folder")
    configs = [flat_config(d) for d in run_dirs]
    keys = sorted({k for c in configs for k in c} - set(IGNORED_KEYS))
    differing = [k for k in keys if len({value_key(c.get(k)) for c in configs}) > 1]
    rows = []
    for run_dir, config in zip(run_dirs, configs, strict=True):
        row = {"run": run_dir.name, **{k: config.get(k) for k in differing}, **run_metrics(run_dir)}
        rows.append(row)
    chosen = default_metrics(rows, list(metrics))
    if not any(isinstance(r.get(m), float) for r in rows for m in chosen):
        raise FraferError("none of these folders has results.json or metrics.jsonl: are they run folders?")
    return markdown_table(rows, ["run", *differing, *chosen])
