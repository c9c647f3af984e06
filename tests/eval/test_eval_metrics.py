"""Classification report: hand-computed scores, the confusion matrix, and the report files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from frafer.errors import FraferError
from frafer.eval.reports import classification_report, confusion_matrix, markdown_table, write_report

# 3 classes, 8 images. Confusion (rows true, cols predicted):
#   a: [3, 1, 0]   b: [1, 1, 0]   c: [0, 1, 1]
Y_TRUE = [0, 0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 0, 1, 1, 0, 2, 1]
CLASSES = ["a", "b", "c"]


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[3, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert cm.sum() == len(Y_TRUE)


def test_report_matches_hand_computation():
    r = classification_report(np.array(Y_TRUE), np.array(Y_PRED), CLASSES)
    assert r["count"] == 8
    assert r["top1"] == pytest.approx(100 * 5 / 8)
    # recall 3/4, 1/2, 1/2; precision 3/4, 1/3, 1/1; F1 3/4, 2/5, 2/3
    assert r["mean_class_acc"] == pytest.approx(100 * (3 / 4 + 1 / 2 + 1 / 2) / 3)
    assert r["macro_f1"] == pytest.approx(100 * (3 / 4 + 2 / 5 + 2 / 3) / 3)
    b = r["per_class"]["b"]
    assert b["precision"] == pytest.approx(100 / 3)
    assert b["recall"] == pytest.approx(50.0)
    assert b["f1"] == pytest.approx(40.0)
    assert b["support"] == 2
    assert r["per_class"]["c"]["precision"] == pytest.approx(100.0)
    assert sum(map(sum, r["confusion"])) == r["count"]
    json.dumps(r)  # plain Python types only
    assert all(type(v["support"]) is int and type(v["f1"]) is float for v in r["per_class"].values())


def test_absent_classes_excluded_but_spurious_predictions_count():
    # class "d" never appears: ignored by both means; class "c" is only predicted: F1 0 counts in macro-F1 only
    r = classification_report([0, 0, 1, 1], [0, 2, 1, 1], ["a", "b", "c", "d"])
    assert r["mean_class_acc"] == pytest.approx(100 * (1 / 2 + 1) / 2)
    f1_a, f1_b = 2 * 1 * 0.5 / 1.5, 2 * (2 / 2) * 1 / 2  # a: p=1 r=1/2; b: p=1 r=1
    assert r["macro_f1"] == pytest.approx(100 * (f1_a + f1_b + 0.0) / 3)
    assert r["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


@pytest.mark.parametrize(
    "y_true, y_pred, match",
    [([0, 3], [0, 1], "class id 3"), ([0, 1], [0, -1], "class id -1"), ([0, 1, 1], [0, 1], "3 labels"),
     ([0.5], [0], "integer class ids"), ([], [], "at least one")],
)
def test_bad_labels_raise(y_true, y_pred, match):
    with pytest.raises(FraferError, match=match):
        classification_report(y_true, y_pred, CLASSES)


def test_write_report_files_and_csv_round_trip(tmp_path):
    r = classification_report(Y_TRUE, Y_PRED, CLASSES)
    paths = write_report(r, tmp_path / "out", "rafdb_test")
    assert {k: p.name for k, p in paths.items()} == {
        "json": "rafdb_test.json", "csv": "rafdb_test_confusion.csv",
        "png": "rafdb_test_confusion.png", "md": "rafdb_test.md",
    }
    assert json.loads(paths["json"].read_text()) == r
    with paths["csv"].open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][1:] == CLASSES
    assert [row[0] for row in rows[1:]] == CLASSES
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == r["confusion"]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["md"].read_text()
    assert "| top-1 (%) | 62.50 |" in md
    assert "| b | 33.33 | 50.00 | 40.00 | 2 |" in md
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())


def test_markdown_table_formats_and_aligns():
    rows = [{"model": "r18|lin", "acc": 81.234, "n": 3}, {"model": "r50", "acc": 85.0}]
    table = markdown_table(rows, ["model", "acc", "n"])
    assert table.splitlines() == [
        "| model | acc | n |",
        "|---|---:|---:|",
        "| r18\\|lin | 81.23 | 3 |",
        "| r50 | 85.00 |  |",
    ]
