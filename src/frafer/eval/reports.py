"""Classification reports: accuracy, per-class and macro scores, the confusion matrix, and files to read them in.

All scores are percentages. A report is a plain dict of Python numbers so it can go straight into JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from frafer.errors import FraferError
from frafer.files import atomic_write, atomic_write_text


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    y_true, y_pred = _check_labels(y_true, y_pred, num_classes)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def classification_report(y_true, y_pred, classes: Sequence[str]) -> dict:
    """Top-1, mean class accuracy, macro-F1 (all %), the confusion matrix and per-class scores.

    mean_class_acc averages recall over the classes present in y_true; macro_f1 averages F1 over the classes
    present in y_true or y_pred (a class never predicted has precision 0, one never true has recall 0), so a
    test split that lacks a class is not penalised for it unless the model predicts that class.
    """
    classes = [str(c) for c in classes]
    cm = confusion_matrix(y_true, y_pred, len(classes))
    count = int(cm.sum())
    if count == 0:
        raise FraferError("classification_report needs at least one prediction, got none")
    support, predicted, correct = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    precision = _ratio(correct, predicted)
    recall = _ratio(correct, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    in_true, in_either = support > 0, (support > 0) | (predicted > 0)
    per_class = {
        name: {
            "precision": 100.0 * float(precision[i]),
            "recall": 100.0 * float(recall[i]),
            "f1": 100.0 * float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return {
        "top1": 100.0 * float(correct.sum()) / count,
        "mean_class_acc": 100.0 * float(recall[in_true].mean()),
        "macro_f1": 100.0 * float(f1[in_either].mean()),
        "count": count,
        "classes": classes,
        "confusion": cm.tolist(),
        "per_class": per_class,
    }


def write_report(report: dict, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write `<name>.json`, `<name>_confusion.csv`, `<name>_confusion.png` and `<name>.md` into out_dir.

    Each file is written to a temporary name and renamed, so a reader never sees half a file. Returns
    {"json" | "csv" | "png" | "md": path}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = _report_classes(report)
    cm = np.asarray(report["confusion"], dtype=np.int64)
    if cm.shape != (len(classes), len(classes)):
        raise FraferError(f"report '{name}': confusion matrix is {cm.shape}, expected {len(classes)}x{len(classes)}")
    paths = {
        "json": out_dir / f"{name}.json",
        "csv": out_dir / f"{name}_confusion.csv",
        "png": out_dir / f"{name}_confusion.png",
        "md": out_dir / f"{name}.md",
    }
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    atomic_write_text(paths["csv"], _confusion_csv(cm, classes))
    atomic_write(paths["png"], lambda tmp: _confusion_figure(cm, classes, _figure_title(report, name), tmp))
    atomic_write_text(paths["md"], report_markdown(report, name))
    return paths


def report_markdown(report: dict, name: str) -> str:
    """The report as Markdown: headline scores, then precision / recall / F1 / support per class."""
    headline = [
        {"metric": "top-1 (%)", "value": report["top1"]},
        {"metric": "mean class accuracy (%)", "value": report["mean_class_acc"]},
        {"metric": "macro-F1 (%)", "value": report["macro_f1"]},
        {"metric": "images", "value": report["count"]},
    ]
    if "calibration" in report:  # evaluate_bundle: ECE with the bundle's temperature and without it
        c = report["calibration"]
        headline += [{"metric": "ECE at T = 1 (%)", "value": c["ece_before"]},
                     {"metric": f"ECE at the bundle's T = {c['temperature']:.3f} (%)", "value": c["ece_after"]}]
    per_class = [
        {"class": cls, "precision (%)": s["precision"], "recall (%)": s["recall"], "F1 (%)": s["f1"],
         "support": s["support"]}
        for cls, s in report["per_class"].items()
    ]
    return (
        f"## {name}\n\n"
        + markdown_table(headline, ["metric", "value"])
        + "\n"
        + markdown_table(per_class, ["class", "precision (%)", "recall (%)", "F1 (%)", "support"])
    )


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub Markdown table of `rows` (dicts) over `columns`; floats get 2 decimals, missing cells stay empty.

    Columns holding only numbers are right-aligned.
    """
    if not columns:
        raise FraferError("markdown_table needs at least one column")
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    numeric = [
        all(_is_number(row.get(col)) for row in rows if row.get(col) is not None) and any(col in r for r in rows)
        for col in columns
    ]
    lines = [
        "| " + " | ".join(_escape(c) for c in columns) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


# --- helpers -------------------------------------------------------------------------------------------------------


def _check_labels(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Both label arrays as 1-D int64 of equal length with every value in [0, num_classes)."""
    if num_classes < 1:
        raise FraferError(f"num_classes must be >= 1, got {num_classes}")
    arrays = []
    for what, values in (("y_true", y_true), ("y_pred", y_pred)):
        a = np.asarray(values).reshape(-1)
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.equal(np.mod(a, 1), 0)):
                raise FraferError(f"{what} must hold integer class ids, got values like {a[np.mod(a, 1) != 0][0]}")
        a = a.astype(np.int64)
        bad = (a < 0) | (a >= num_classes)
        if bad.any():
            raise FraferError(f"{what} holds class id {a[bad][0]}, expected 0..{num_classes - 1}")
        arrays.append(a)
    if len(arrays[0]) != len(arrays[1]):
        raise FraferError(f"y_true has {len(arrays[0])} labels but y_pred has {len(arrays[1])}")
    return arrays[0], arrays[1]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den element-wise, 0 where den is 0."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _report_classes(report: dict) -> list[str]:
    return list(report.get("classes") or report["per_class"].keys())


def _figure_title(report: dict, name: str) -> str:
    return f"{name}: top-1 {report['top1']:.2f}%, macro-F1 {report['macro_f1']:.2f}% (n={report['count']})"


def _confusion_csv(cm: np.ndarray, classes: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["true\\predicted", *classes])
    for name, row in zip(classes, cm.tolist(), strict=True):
        writer.writerow([name, *row])
    return buf.getvalue()


def _confusion_figure(cm: np.ndarray, classes: list[str], title: str, path: Path) -> None:
    """Counts in the cells, colours by the row-normalised fraction (so rare classes are as visible as common ones)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg only: no display, no global backend change
    from matplotlib.figure import Figure

    n = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    side = max(4.0, 0.6 * n + 2.0)
    fig = Figure(figsize=(side + 1.0, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ax.set_xticks(range(n), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(n), labels=classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)




def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.2f}"
    return _escape(str(value))


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
