"""A sweep's plots: each metric against each swept key and by setting (mean and std over seeds), and the loss
curves overlaid."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg only: no display, no global backend change
from matplotlib.figure import Figure

from frafer.experiments.sweep_spec import Sweep, short_names, stage_runs
from frafer.experiments.tables import CURVES, axis_text, curve, mean_std, value_key


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def varying_axes(rows: list[dict], axes: list[str]) -> list[str]:
    """The non-seed axes that take more than one value across the rows: a key every point sets alike says nothing."""
    return [a for a in axes if a != "seed" and len({axis_text(r.get(a)) for r in rows}) > 1]


def setting_label(row: dict, axes: list[str]) -> str:
    """`lars_eta=0.003, lr=0.01`: the row's values of `axes` by short name, leaving out the keys left at the recipe."""
    names = short_names(axes)
    return ", ".join(f"{names[a]}={axis_text(row.get(a))}" for a in axes if row.get(a) is not None) or "recipe"


def _determines(rows: list[dict], axis: str, other: str) -> bool:
    seen: dict[str, str] = {}
    return all(seen.setdefault(axis_text(r.get(axis)), axis_text(r.get(other))) == axis_text(r.get(other))
               for r in rows)


def in_step(rows: list[dict], axis: str, other: str) -> bool:
    """Whether `other` is a number that moves with the axis, each determining the other (fine-tuning epochs set per
    label fraction): the same axis under two names, so a line split by it would hold a single point. A key that
    names what is compared (a method, an init) always splits lines."""
    numeric = all(_is_number(axis_text(r.get(other))) for r in rows)
    return numeric and _determines(rows, axis, other) and _determines(rows, other, axis)


def plot_metric_against_axes(rows: list[dict], axes: list[str], metrics: list[str], folder: Path,
                             against: list[str] | None = None) -> list[Path]:
    """For each axis that varies (or each of `against`) and each metric: the metric (mean ± std over seeds) against
    the axis's values, one line per setting of the other varying axes (those in step with it aside), labelled by the
    keys that differ between lines. Values that are not numbers are placed evenly, in sweep order."""
    folder.mkdir(parents=True, exist_ok=True)
    swept = varying_axes(rows, axes)
    written = []
    for axis in swept if against is None else [a for a in swept if a in against]:
        others = [a for a in swept if a != axis and not in_step(rows, axis, a)]
        for metric in metrics:
            lines: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
            first: dict[tuple, dict] = {}
            for row in rows:
                if row.get("status") == "ok" and isinstance(row.get(metric), float):
                    label = tuple(axis_text(row.get(o)) for o in others)
                    lines[label][axis_text(row.get(axis))].append(row[metric])
                    first.setdefault(label, row)
            if not lines:
                continue
            order = list(dict.fromkeys(axis_text(r.get(axis)) for r in rows))
            numeric = all(_is_number(v) for v in order)
            if numeric:  # each line left to right, whatever order the sweep listed its values in
                order.sort(key=float)
            named = varying_axes(list(first.values()), others)
            fig, ax = _figure(5, 3.5)
            for label, points in lines.items():
                xs = [v for v in order if v in points]
                stats = [mean_std(points[v]) for v in xs]
                where = [float(v) for v in xs] if numeric else [order.index(v) for v in xs]
                ax.errorbar(where, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3,
                            label=setting_label(first[label], named) if named else None)
            if not numeric:
                ax.set_xticks(range(len(order)), order)
            elif min(map(float, order)) > 0 and max(map(float, order)) >= 20 * min(map(float, order)):
                ax.set_xscale("log")  # learning rates, weights: values that span decades
            ax.set_xlabel(axis)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
            if named:
                ax.legend(fontsize=7)
            fig.tight_layout()
            path = folder / f"{_safe(metric)}_vs_{_safe(axis)}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
    return written


def plot_metric_by_setting(rows: list[dict], axes: list[str], metrics: list[str], folder: Path) -> list[Path]:
    """Per metric, every setting of the sweep (seeds folded, mean ± std) as one bar of a horizontal chart, in sweep
    order: the readable view of a list of points that change several keys at once, where a plot per key is not."""
    folder.mkdir(parents=True, exist_ok=True)
    swept = varying_axes(rows, axes)
    written = []
    for metric in metrics:
        groups: dict[tuple, list[float]] = defaultdict(list)
        first: dict[tuple, dict] = {}
        for row in rows:
            key = tuple(value_key(row.get(a)) for a in swept)
            first.setdefault(key, row)
            if row.get("status") == "ok" and isinstance(row.get(metric), float):
                groups[key].append(row[metric])
        settings = [k for k in first if groups[k]]
        if not settings:
            continue
        labels = [setting_label(first[k], swept) for k in settings]
        stats = [mean_std(groups[k]) for k in settings]
        fig, ax = _figure(7, 0.9 + 0.38 * len(settings))
        where = list(range(len(settings)))[::-1]  # the sweep's first setting on top
        ax.barh(where, [m for m, _ in stats], xerr=[s for _, s in stats], capsize=3, color="tab:blue", alpha=0.75)
        for y, (mean, std), k in zip(where, stats, settings, strict=True):
            ax.text(mean + std, y, f"  {mean:.2f} (n={len(groups[k])})", va="center", fontsize=7)
        ax.set_yticks(where, labels, fontsize=7)
        low = min(m - s for m, s in stats)
        high = max(m + s for m, s in stats)
        ax.set_xlim(max(0.0, low - 0.15 * (high - low + 1e-9)), high + 0.35 * (high - low + 1e-9))
        ax.set_xlabel(f"{metric} (mean ± std over seeds)")
        ax.grid(alpha=0.3, axis="x")
        fig.tight_layout()
        path = folder / f"{_safe(metric)}_by_setting.png"
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
