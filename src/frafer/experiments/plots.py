"""A sweep's plots: each metric against each swept key (mean and std over seeds), and the loss curves overlaid."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg only: no display, no global backend change
from matplotlib.figure import Figure

from frafer.experiments.sweep_spec import Sweep, stage_runs
from frafer.experiments.tables import CURVES, axis_text, curve, mean_std


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def plot_metric_against_axes(rows: list[dict], axes: list[str], metrics: list[str], folder: Path) -> list[Path]:
    """For each non-seed axis and metric: the metric (mean ± std over seeds) against the axis's values, one line per
    setting of the other non-seed axes. Values that are not numbers are placed evenly, in sweep order."""
    folder.mkdir(parents=True, exist_ok=True)
    swept = [a for a in axes if a != "seed"]
    written = []
    for axis in swept:
        others = [a for a in swept if a != axis]
        for metric in metrics:
            lines: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
            for row in rows:
                if row.get("status") == "ok" and isinstance(row.get(metric), float):
                    lines[tuple(axis_text(row.get(o)) for o in others)][axis_text(row.get(axis))].append(row[metric])
            if not lines:
                continue
            order = list(dict.fromkeys(axis_text(r.get(axis)) for r in rows))
            numeric = all(_is_number(v) for v in order)
            if numeric:  # each line left to right, whatever order the sweep listed its values in
                order.sort(key=float)
            fig, ax = _figure(5, 3.5)
            for label, points in lines.items():
                xs = [v for v in order if v in points]
                stats = [mean_std(points[v]) for v in xs]
                where = [float(v) for v in xs] if numeric else [order.index(v) for v in xs]
                ax.errorbar(where, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                            label=", ".join(f"{o.rsplit('.', 1)[-1]}={v}" for o, v in zip(others, label, strict=True))
                            or None)
            if not numeric:
                ax.set_xticks(range(len(order)), order)
            elif min(map(float, order)) > 0 and max(map(float, order)) >= 20 * min(map(float, order)):
                ax.set_xscale("log")  # learning rates, weights: values that span decades
            ax.set_xlabel(axis)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if others:
                ax.legend(fontsize=7)
            fig.tight_layout()
            path = folder / f"{_safe(metric)}_vs_{_safe(axis)}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
    return written


def plot_curves(sweep: Sweep, sweep_dir: Path, folder: Path) -> list[Path]:
    """Per stage and logged series (loss, kNN, sharpness, val top-1: `tables.CURVES`): every run's curve overlaid.

    Points sharing a stage's run (they differ only in later stages) draw it once, under the setting it ran at.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for stage in sweep.stages:
        runs = stage_runs(sweep, sweep_dir, stage.name)
        for kind, key in CURVES:
            curves = [(run_dir.parent.name, curve(run_dir, kind, key)) for run_dir in runs]
            curves = [(name, c) for name, c in curves if c[0]]
            if not curves:
                continue
            fig, ax = _figure(6, 3.8)
            for name, (steps, values) in curves:
                ax.plot(steps, values, linewidth=1, label=name, marker="o" if len(steps) < 12 else None,
                        markersize=3)
            ax.set_xlabel("step")
            ax.set_ylabel(f"{stage.name} {key}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, ncol=2)
            fig.tight_layout()
            path = folder / f"{_safe(stage.name)}_{_safe(key)}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
    return written


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text not in ("True", "False", "true", "false")
