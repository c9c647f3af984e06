"""The labelled expression readers, each on a tiny fixture written in its native layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frafer.data.fer.crowd import VOTE_COLUMNS
from frafer.data.fer.dataset import NO_LABEL, FERDataset, load_sample_image
from frafer.data.fer.labels import EXPRESSIONS, FERPLUS_COLUMNS
from frafer.data.readers.affectnet import read_affectnet
from frafer.data.readers.class_folders import read_class_folders
from frafer.data.readers.fer2013 import read_fer2013, read_fer2013_pixels
from frafer.data.readers.fer_formats import FER_FORMATS, read_fer_dataset
from frafer.data.readers.ferplus import read_ferplus
from frafer.data.readers.rafdb import read_rafdb
from frafer.data.readers.synthetic_faces import read_synthetic, read_synthetic_roots
from frafer.data.synthetic.renderer import write_synthetic_dataset
from frafer.errors import FraferError

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)


def write_image(path: Path, size: int = 8, colour: bool = True) -> Path:
    """A small image whose red channel is the column index, so a crop's left edge can be read back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.tile(np.arange(size, dtype=np.uint8), (size, 1))  # (H, W): value = column
    pixels = np.stack([x, np.full_like(x, 50), np.full_like(x, 90)], axis=-1) if colour else x
    Image.fromarray(pixels).save(path)
    return path


def write_rows(path: Path, rows: list[list[object]], header: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        if header is not None:
            handle.write(header + "\n")
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return path


def labels_by_key(dataset: FERDataset, split: str) -> dict[str, str]:
    return {s.key: EXPRESSIONS[s.label] for s in dataset.split(split)}


# --------------------------------------------------------------------------------------------------
# AffectNet
# --------------------------------------------------------------------------------------------------


def affectnet_row(relative: str, code: object, box=(2, 1, 5, 6)) -> list[object]:
    return [relative, *box, "1.0;2.0;3.0;4.0", code, 0.1, -0.2]


def make_affectnet(root: Path) -> Path:
    """training.csv: one row per code 0-10, a missing image, an image directly under root, and a 120 px one;
    validation.csv without a header line, as released."""
    images = root / "Manually_Annotated_Images"
    train_rows = []
    for code in range(11):
        write_image(images / "101" / f"c{code}.jpg", size=16)
        train_rows.append(affectnet_row(f"101/c{code}.jpg", code))
    train_rows.append(affectnet_row("101/gone.jpg", 1))
    write_image(root / "202" / "direct.jpg", size=16)
    train_rows.append(affectnet_row("202/direct.jpg", 2))
    write_image(images / "303" / "big.jpg", size=120)
    train_rows.append(affectnet_row("303/big.jpg", 3, box=(10, 20, 100, 90)))
    write_rows(root / "training.csv", train_rows, header=AFFECTNET_HEADER)
    write_image(images / "404" / "v.jpg", size=16)
    write_rows(root / "validation.csv", [affectnet_row("404/v.jpg", 6), affectnet_row("404/v.jpg", 9)])
    return root


def test_affectnet_csv_maps_codes_drops_8_to_10_and_crops(tmp_path):
    data = read_affectnet(make_affectnet(tmp_path))
    assert data.classes == EXPRESSIONS[:7] and set(data.splits) == {"train", "test"}
    labels = labels_by_key(data, "train")
    expected = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]
    for code, name in enumerate(expected):
        assert labels[f"Manually_Annotated_Images/101/c{code}.jpg"] == name
    assert labels["202/direct.jpg"] == "sad"  # accepted directly under root
    assert len(labels) == 9
    assert data.skipped == {
        "none (code 8)": 1, "uncertain (code 9)": 2, "no face (code 10)": 1,  # one 9 in validation.csv
        "contempt (7-class mode)": 1, "missing image": 1,
    }
    assert [s.label for s in data.split("test")] == [EXPRESSIONS.index("anger")]
    sample = data.split("train")[0]
    assert sample.box == (2.0, 1.0, 5.0, 6.0)
    image = load_sample_image(sample)
    assert image.mode == "RGB" and image.size == (5, 6)
    big = next(s for s in data.split("train") if s.key.endswith("big.jpg"))
    assert load_sample_image(big).size == (100, 90)  # colour 120 px image, cropped by its CSV box


def test_affectnet_8_classes_keeps_contempt(tmp_path):
    data = read_affectnet(make_affectnet(tmp_path), num_classes=8)
    assert data.classes == EXPRESSIONS
    assert labels_by_key(data, "train")["Manually_Annotated_Images/101/c7.jpg"] == "contempt"
    assert "contempt (7-class mode)" not in data.skipped


@pytest.mark.parametrize("value", ["x", "11", "-1"])
def test_affectnet_bad_expression_names_file_and_line(tmp_path, value):
    root = make_affectnet(tmp_path)
    write_rows(root / "training.csv", [affectnet_row("101/c0.jpg", 0), affectnet_row("101/c1.jpg", value)],
               header=AFFECTNET_HEADER)
    with pytest.raises(FraferError, match=rf"training\.csv line 3: expression .*{value!r}"):
        read_affectnet(root)


def test_affectnet_errors(tmp_path):
    with pytest.raises(FraferError, match="does not exist"):
        read_affectnet(tmp_path / "nowhere")
    with pytest.raises(FraferError, match="training.csv"):
        read_affectnet(tmp_path)  # an empty folder: neither layout
    root = make_affectnet(tmp_path / "a")
    (root / "validation.csv").unlink()
    with pytest.raises(FraferError, match=r"validation\.csv does not exist"):
        read_affectnet(root)
    root = make_affectnet(tmp_path / "b")
    write_rows(root / "validation.csv", [affectnet_row("nope/1.jpg", 0), affectnet_row("nope/2.jpg", 1)])
    with pytest.raises(FraferError, match=r"none of the 2 'test' images listed in .*validation\.csv"):
        read_affectnet(root)
    with pytest.raises(FraferError, match="7 or 8"):
        read_affectnet(make_affectnet(tmp_path / "c"), num_classes=10)
    root = make_affectnet(tmp_path / "d")
    write_rows(root / "training.csv", [affectnet_row("101/c0.jpg", 0)], header="subDirectory_filePath,expression")
    with pytest.raises(FraferError, match="line 1: header lacks face_x"):
        read_affectnet(root)


def test_affectnet_class_folder_layout(tmp_path):
    for code in (0, 1, 7, 8):
        write_image(tmp_path / "train" / str(code) / f"{code}.png")
    write_image(tmp_path / "val" / "Happy" / "h.png")
    write_image(tmp_path / "val" / "anger" / "a.png")
    data = read_affectnet(tmp_path)
    assert "class folders" in data.name and set(data.splits) == {"train", "test"}
    assert sorted(labels_by_key(data, "train").values()) == ["happy", "neutral"]
    assert sorted(labels_by_key(data, "test").values()) == ["anger", "happy"]
    assert data.skipped == {"contempt (7-class mode)": 1, "none (code 8)": 1}
    assert "contempt" in labels_by_key(read_affectnet(tmp_path, num_classes=8), "train").values()
    write_image(tmp_path / "val" / "bored" / "b.png")
    with pytest.raises(FraferError, match="'bored' is not an expression name; known names"):
        read_affectnet(tmp_path)


# --------------------------------------------------------------------------------------------------
# RAF-DB
# --------------------------------------------------------------------------------------------------


def make_rafdb(root: Path, lines: list[str] | None = None) -> Path:
    """Train images with labels 1..7 (100 px colour, as the aligned crops are), two test images, one missing."""
    if lines is None:
        lines = [f"train_{i:05d}.jpg {i}" for i in range(1, 8)] + ["test_0001.jpg 4", "test_0002.jpg 1"]
        lines.append("train_00099.jpg 3")  # listed but not on disk
    for line in lines:
        name = line.split()[0]
        if "00099" not in name:
            write_image(root / "Image" / "aligned" / name.replace(".jpg", "_aligned.jpg"), size=100)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def test_rafdb_labels_splits_and_missing(tmp_path):
    data = read_rafdb(make_rafdb(tmp_path))
    assert data.classes == EXPRESSIONS[:7]
    labels = labels_by_key(data, "train")
    expected = ["surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"]
    assert [labels[f"Image/aligned/train_{i:05d}_aligned.jpg"] for i in range(1, 8)] == expected
    assert sorted(labels_by_key(data, "test").values()) == ["happy", "surprise"]
    assert data.skipped == {"missing image": 1}
    image = load_sample_image(data.split("test")[0])
    assert image.mode == "RGB" and image.size == (100, 100)


@pytest.mark.parametrize(
    ("bad", "message"),
    [("train_00001.jpg 8", "the label must be an integer 1..7, got '8'"),
     ("train_00001.jpg x", "the label must be an integer 1..7, got 'x'"),
     ("val_00001.jpg 2", "image name 'val_00001.jpg' must start with train_ or test_"),
     ("train_00001.jpg", "expected '<image name> <label 1-7>'")],
)
def test_rafdb_bad_lines_name_file_and_line(tmp_path, bad, message):
    root = make_rafdb(tmp_path, ["train_00002.jpg 1", bad])
    with pytest.raises(FraferError, match=rf"list_patition_label\.txt line 2: {message}"):
        read_rafdb(root)


def test_rafdb_missing_files(tmp_path):
    with pytest.raises(FraferError, match=r"EmoLabel/list_patition_label\.txt does not exist"):
        read_rafdb(tmp_path)
    root = make_rafdb(tmp_path / "r")
    for path in (root / "Image" / "aligned").glob("test_*"):
        path.unlink()
    with pytest.raises(FraferError, match="none of the 2 'test' images listed"):
        read_rafdb(root)


# --------------------------------------------------------------------------------------------------
# FER2013
# --------------------------------------------------------------------------------------------------


def pixel_text(seed: int, count: int = 48 * 48, high: int = 256) -> str:
    return " ".join(map(str, np.random.default_rng(seed).integers(0, high, count)))


def make_fer2013(path: Path, rows: list[tuple[object, str, str]] | None = None) -> Path:
    if rows is None:
        usages = ["Training", "Training", "Training", "PublicTest", "PublicTest", "PrivateTest", "PrivateTest"]
        rows = [(code, pixel_text(code), usage) for code, usage in enumerate(usages)]
        rows += [(3, pixel_text(9, count=2303), "Training"), (3, pixel_text(10, high=300), "Training")]
    return write_rows(path, [list(r) for r in rows], header="emotion,pixels,Usage")


def test_fer2013_codes_splits_pixels_and_malformed_rows(tmp_path):
    make_fer2013(tmp_path / "fer2013.csv")
    data = read_fer2013(tmp_path)  # the folder: fer2013.csv is found inside
    names = {s.key: EXPRESSIONS[s.label] for split in data.splits.values() for s in split}
    expected = ["anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert [names[f"fer2013.csv:{row}"] for row in range(7)] == expected
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 3, "val": 2, "test": 2}
    assert data.skipped == {"malformed pixels": 2}
    sample = data.split("train")[0]
    assert sample.image.shape == (48, 48) and sample.image.dtype == np.uint8
    assert sample.image.ravel().tolist() == [int(v) for v in pixel_text(0).split()]
    image = load_sample_image(sample)
    assert image.mode == "RGB" and image.size == (48, 48)
    rows = read_fer2013_pixels(tmp_path / "fer2013.csv")
    assert [(r[0], r[1], r[3]) for r in rows[:2]] == [(0, 0, "Training"), (1, 1, "Training")]
    assert rows[7][2] is None and rows[8][2] is None and rows[0][2] is not None


def test_fer2013_is_parsed_once_and_the_cache_follows_the_file(tmp_path, monkeypatch, capsys):
    from frafer.data.readers import fer2013 as fer2013_module

    path = make_fer2013(tmp_path / "fer2013.csv")
    first = read_fer2013_pixels(path)
    cache = tmp_path / "fer2013.csv.frafer-cache.npz"
    assert cache.is_file() and "cached in" in capsys.readouterr().out

    def no_parse(path):
        raise AssertionError("parsed again although the cache matches")

    monkeypatch.setattr(fer2013_module, "_parse_fer2013", no_parse)
    again = read_fer2013_pixels(path)
    assert f"from the parse cache {cache}" in capsys.readouterr().out
    assert [(r, c, u) for r, c, _, u in again] == [(r, c, u) for r, c, _, u in first]
    pairs = zip([r[2] for r in first], [r[2] for r in again], strict=True)
    assert all((a is None and b is None) or np.array_equal(a, b) for a, b in pairs)
    assert read_fer2013(tmp_path).skipped == {"malformed pixels": 2}  # the dataset from the cache is the same
    monkeypatch.undo()
    # a changed file (other content, any size) is parsed afresh, never served stale
    make_fer2013(path, [(6, pixel_text(5), "Training"), (0, pixel_text(6), "PrivateTest")])
    rows = read_fer2013_pixels(path)
    assert [(r[1], r[3]) for r in rows] == [(6, "Training"), (0, "PrivateTest")]


def test_fer2013_cache_goes_to_the_user_cache_when_the_folder_is_read_only(tmp_path, monkeypatch):
    from frafer.data.readers import fer2013 as fer2013_module

    path = make_fer2013(tmp_path / "data" / "fer2013.csv")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    real_save = fer2013_module._save_cache
    beside = path.with_name("fer2013.csv.frafer-cache.npz")
    monkeypatch.setattr(fer2013_module, "_save_cache",
                        lambda where, key, rows: where != beside and real_save(where, key, rows))
    read_fer2013_pixels(path)
    assert not beside.exists() and len(list((tmp_path / "user-cache" / "frafer").glob("fer2013-*.npz"))) == 1


def test_fer2013_errors(tmp_path):
    with pytest.raises(FraferError, match=r"fer2013\.csv does not exist"):
        read_fer2013(tmp_path)
    path = make_fer2013(tmp_path / "a.csv", [(0, pixel_text(0), "Training"), (7, pixel_text(1), "Training")])
    with pytest.raises(FraferError, match=r"a\.csv line 3: emotion must be an integer 0\.\.6, got '7'"):
        read_fer2013(path)
    path = make_fer2013(tmp_path / "b.csv", [(0, pixel_text(0), "Train")])
    with pytest.raises(FraferError, match="b.csv line 2: Usage must be one of"):
        read_fer2013(path)
    path = write_rows(tmp_path / "d.csv", [[0, pixel_text(0), "Training", "extra"]], header="emotion,pixels,Usage")
    with pytest.raises(FraferError, match="d.csv line 2: expected 3 fields"):
        read_fer2013(path)
    path = write_rows(tmp_path / "c.csv", [[0, pixel_text(0)]], header="emotion,pixels")
    with pytest.raises(FraferError, match="line 1: expected the header emotion,pixels,Usage"):
        read_fer2013(path)


# --------------------------------------------------------------------------------------------------
# FERPlus
# --------------------------------------------------------------------------------------------------


def votes(**counts: int) -> list[int]:
    """10 counts in FERPlus column order from keyword counts, e.g. votes(happiness=10)."""
    return [counts.get(column, 0) for column in FERPLUS_COLUMNS]


# (Usage, Image name, votes, what the reader should make of the row)
FERPLUS_ROWS = [
    ("Training", "fer0000000.png", votes(neutral=10), "neutral"),
    ("Training", "", votes(NF=10), "no image name"),
    ("Training", "fer0000001.png", votes(happiness=10), "happy"),
    ("Training", "fer0000002.png", votes(neutral=4, happiness=4, surprise=2), "no majority: kept in train"),
    ("Training", "fer0000003.png", votes(unknown=8, neutral=2), "no usable votes"),
    ("PublicTest", "fer0000004.png", votes(surprise=10), "surprise"),
    ("PublicTest", "fer0000005.png", votes(neutral=4, happiness=4, surprise=2), "no majority: dropped"),
    ("PrivateTest", "fer0000006.png", votes(contempt=10), "contempt"),
    ("PrivateTest", "fer0000007.png", votes(sadness=6, anger=4), "sad"),
    ("PrivateTest", "fer0000008.png", votes(fear=9, disgust=1), "malformed pixels"),
]


def make_ferplus_csv(root: Path) -> Path:
    """fer2013new.csv in root, fer2013.csv (aligned row by row) in root's parent."""
    fer_rows = []
    for i, (usage, *_rest, what) in enumerate(FERPLUS_ROWS):
        fer_rows.append((0, pixel_text(i, count=2000 if what == "malformed pixels" else 2304), usage))
    make_fer2013(root.parent / "fer2013.csv", fer_rows)
    header = "Usage,Image name," + ",".join(FERPLUS_COLUMNS)
    write_rows(root / "fer2013new.csv", [[u, n, *v] for u, n, v, _ in FERPLUS_ROWS], header=header)
    return root


def test_ferplus_csv_source(tmp_path):
    data = read_ferplus(make_ferplus_csv(tmp_path / "FERPlus"))
    assert "fer2013new.csv" in data.name and data.classes == EXPRESSIONS
    train = {s.key: s for s in data.split("train")}
    assert set(train) == {"fer2013.csv:0", "fer2013.csv:2", "fer2013.csv:3"}
    assert EXPRESSIONS[train["fer2013.csv:2"].label] == "happy"
    assert train["fer2013.csv:3"].label == NO_LABEL  # no majority: kept for crowd-label training
    happy_votes = train["fer2013.csv:2"].votes
    assert happy_votes[VOTE_COLUMNS.index("happy")] == 10 and happy_votes.sum() == 10
    assert [EXPRESSIONS[s.label] for s in data.split("val")] == ["surprise"]
    assert [EXPRESSIONS[s.label] for s in data.split("test")] == ["contempt", "sad"]
    assert data.skipped == {
        "no image name (not a face)": 1, "no usable votes (unknown / not a face)": 1,
        "no majority (val / test)": 1, "malformed pixels": 1,
    }
    assert train["fer2013.csv:0"].image.shape == (48, 48)
    seven = read_ferplus(tmp_path / "FERPlus", num_classes=7)
    assert seven.classes == EXPRESSIONS[:7] and [EXPRESSIONS[s.label] for s in seven.split("test")] == ["sad"]
    assert seven.skipped["no usable votes (unknown / not a face)"] == 2  # contempt has no target in 7 classes


def test_ferplus_csv_errors(tmp_path):
    root = make_ferplus_csv(tmp_path / "FERPlus")
    (tmp_path / "fer2013.csv").rename(tmp_path / "elsewhere.csv")
    with pytest.raises(FraferError, match="needs the pixels of fer2013.csv"):
        read_ferplus(root)
    assert len(read_ferplus(root, fer2013_csv=tmp_path / "elsewhere.csv").split("train")) == 3
    make_fer2013(tmp_path / "short.csv", [(0, pixel_text(0), "Training")])
    with pytest.raises(FraferError, match="has 10 rows but .*short.csv has 1"):
        read_ferplus(root, fer2013_csv=tmp_path / "short.csv")
    shifted = [(0, pixel_text(0), "PublicTest")] * len(FERPLUS_ROWS)
    make_fer2013(tmp_path / "shifted.csv", shifted)
    with pytest.raises(FraferError, match="line 2: Usage Training but row 0 .* says PublicTest"):
        read_ferplus(root, fer2013_csv=tmp_path / "shifted.csv")
    rows = [[u, n, *v] for u, n, v, _ in FERPLUS_ROWS]
    rows[2][3] = "x"
    write_rows(root / "fer2013new.csv", rows, header="Usage,Image name," + ",".join(FERPLUS_COLUMNS))
    message = r"fer2013new\.csv line 4: the happiness vote count must be a non-negative integer, got 'x'"
    with pytest.raises(FraferError, match=message):
        read_ferplus(root, fer2013_csv=tmp_path / "elsewhere.csv")
    with pytest.raises(FraferError, match="neither .*fer2013new.csv nor .*label.csv"):
        read_ferplus((tmp_path / "empty").mkdir() or tmp_path / "empty")
    with pytest.raises(FraferError, match="source must be one of auto, csv, folders"):
        read_ferplus(root, source="png")


def make_ferplus_folders(root: Path) -> Path:
    """data/FER2013{Train,Valid,Test}/label.csv (no header, box column) and 48 px grey PNGs beside them."""
    layout = {
        "FER2013Train": [("t0.png", "(0, 0, 48, 48)", votes(happiness=9, neutral=1)),
                         ("t1.png", "(2, 4, 40, 44)", votes(fear=6, surprise=4)),
                         ("t2.png", None, votes(anger=5, disgust=5)),  # newer label.csv: no box column
                         ("t3.png", "(0, 0, 48, 48)", votes(NF=10)),
                         ("gone.png", "(0, 0, 48, 48)", votes(sadness=10))],
        "FER2013Valid": [("v0.png", "(0, 0, 48, 48)", votes(disgust=7, anger=3))],
        "FER2013Test": [("s0.png", "(0, 0, 48, 48)", votes(neutral=10))],
    }
    for folder, rows in layout.items():
        out = []
        for name, box, counts in rows:
            if name != "gone.png":
                write_image(root / "data" / folder / name, size=48, colour=False)
            out.append([name, *([box] if box else []), *counts])
        write_rows(root / "data" / folder / "label.csv", out)
    return root


def test_ferplus_folder_source(tmp_path):
    root = make_ferplus_folders(tmp_path)
    data = read_ferplus(root)  # auto: the folders hold PNGs
    assert "label.csv" in data.name
    train = {s.key: s for s in data.split("train")}
    assert set(train) == {"data/FER2013Train/t0.png", "data/FER2013Train/t1.png", "data/FER2013Train/t2.png"}
    assert EXPRESSIONS[train["data/FER2013Train/t0.png"].label] == "happy"
    assert EXPRESSIONS[train["data/FER2013Train/t1.png"].label] == "fear"
    assert train["data/FER2013Train/t2.png"].label == NO_LABEL and train["data/FER2013Train/t2.png"].box is None
    assert train["data/FER2013Train/t1.png"].box == (2, 4, 38, 40)  # (left, top, right, bottom) → (x, y, w, h)
    image = load_sample_image(train["data/FER2013Train/t1.png"])
    assert image.mode == "RGB" and image.size == (38, 40) and image.getpixel((0, 0))[0] == 2
    assert [EXPRESSIONS[s.label] for s in data.split("val")] == ["disgust"]
    assert [EXPRESSIONS[s.label] for s in data.split("test")] == ["neutral"]
    assert data.skipped == {"no usable votes (unknown / not a face)": 1, "missing image": 1}
    grey = load_sample_image(data.split("test")[0])
    assert grey.mode == "RGB" and grey.size == (48, 48)


def test_ferplus_folder_errors(tmp_path):
    root = make_ferplus_folders(tmp_path / "a")
    write_rows(root / "data" / "FER2013Valid" / "label.csv", [["v0.png", "(0, 0, 48)", *votes(disgust=10)]])
    with pytest.raises(FraferError, match=r"FER2013Valid/label\.csv line 1: face box must look like"):
        read_ferplus(root, source="folders")
    root = make_ferplus_folders(tmp_path / "b")
    (root / "data" / "FER2013Test" / "s0.png").unlink()
    with pytest.raises(FraferError, match="none of the 1 'test' images listed"):
        read_ferplus(root)
    root = make_ferplus_folders(tmp_path / "c")
    (root / "data" / "FER2013Test" / "label.csv").unlink()
    with pytest.raises(FraferError, match=r"FER2013Test/label\.csv does not exist"):
        read_ferplus(root)


# --------------------------------------------------------------------------------------------------
# Class folders (CK+, JAFFE, Kaggle copies)
# --------------------------------------------------------------------------------------------------


def test_class_folders_single_split_aliases_and_subject_pattern(tmp_path):
    names = {"Angry": "S005_001_00000011.png", "happiness": "S010_004_00000019.png",
             "SAD": "S011_002_00000021.png", "surprised": "S014_001_00000029.png",
             "afraid": "S022_001_00000030.png", "disgusted": "S026_002_00000016.png",
             "neutral": "S005_002_00000001.png"}
    for folder, name in names.items():
        write_image(tmp_path / folder / "nested" / name)
    write_image(tmp_path / "loose.png")
    data = read_class_folders(tmp_path, subject_pattern=r"^(S\d+)_")
    assert data.classes == EXPRESSIONS[:7] and list(data.splits) == ["all"]
    labels = labels_by_key(data, "all")
    assert labels["Angry/nested/S005_001_00000011.png"] == "anger"
    assert labels["afraid/nested/S022_001_00000030.png"] == "fear"
    assert sorted(labels.values()) == sorted(EXPRESSIONS[:7])
    assert {s.subject for s in data.split("all")} == {"S005", "S010", "S011", "S014", "S022", "S026"}
    assert data.skipped == {"image outside a class folder": 1}
    write_image(tmp_path / "contempt" / "S030_001_00000001.png")
    assert read_class_folders(tmp_path).classes == EXPRESSIONS
    write_image(tmp_path / "contempt" / "KA.CO1.png")
    with pytest.raises(FraferError, match=r"does not find a subject in the file name of .*KA\.CO1\.png"):
        read_class_folders(tmp_path, subject_pattern=r"^(S\d+)_")


def test_class_folders_split_layout_and_subjects_csv(tmp_path):
    write_image(tmp_path / "train" / "happy" / "KA.HA1.tiff.png")
    write_image(tmp_path / "train" / "anger" / "KL.AN2.tiff.png")
    write_image(tmp_path / "validation" / "fear" / "KA.FE1.tiff.png")
    write_image(tmp_path / "Test" / "sadness" / "YM.SA3.tiff.png")
    data = read_class_folders(tmp_path, subject_pattern=r"^([A-Z]{2})\.")
    assert {k: len(v) for k, v in data.splits.items()} == {"test": 1, "train": 2, "val": 1}
    assert [s.subject for s in data.split("test")] == ["YM"]
    table = tmp_path / "subjects.csv"
    keys = [s.key for split in data.splits.values() for s in split]
    write_rows(table, [[key, f"p{i}"] for i, key in enumerate(keys)], header="image,subject")
    with_csv = read_class_folders(tmp_path, subjects=table)
    assert sorted(s.subject for split in with_csv.splits.values() for s in split) == ["p0", "p1", "p2", "p3"]
    write_rows(table, [[key, "p"] for key in keys[1:]], header="image,subject")
    with pytest.raises(FraferError, match=rf"subjects\.csv has no row for image {keys[0]}"):
        read_class_folders(tmp_path, subjects=table)
    # more columns are allowed; a fold column gives each image its fold, and must exist
    write_rows(table, [[key, f"p{i}", "x", i % 2] for i, key in enumerate(keys)], header="image,subject,note,fold")
    folded = read_class_folders(tmp_path, subjects=table, fold_column="fold")
    assert [s.fold for split in folded.splits.values() for s in split] == ["0", "1", "0", "1"]
    assert read_class_folders(tmp_path, subjects=table).classes == ("happy", "sad", "fear", "anger")
    with pytest.raises(FraferError, match="no column 'fold10_by_subject' .*data.fold_column"):
        read_class_folders(tmp_path, subjects=table, fold_column="fold10_by_subject")
    with pytest.raises(FraferError, match="needs the CSV that holds it"):
        read_class_folders(tmp_path, fold_column="fold")


def test_class_folders_errors(tmp_path):
    write_image(tmp_path / "a" / "bored" / "x.png")
    with pytest.raises(FraferError, match="'bored' is not an expression name; known names .*angry"):
        read_class_folders(tmp_path / "a")
    write_image(tmp_path / "b" / "train" / "happy" / "x.png")
    write_image(tmp_path / "b" / "happy" / "y.png")
    with pytest.raises(FraferError, match="'happy' sits beside the split folders"):
        read_class_folders(tmp_path / "b")
    with pytest.raises(FraferError, match="does not exist"):
        read_class_folders(tmp_path / "missing")
    (tmp_path / "c" / "happy").mkdir(parents=True)
    with pytest.raises(FraferError, match="contains no images"):
        read_class_folders(tmp_path / "c")
    write_image(tmp_path / "d" / "happy" / "x.png")
    with pytest.raises(FraferError, match="needs a group"):
        read_class_folders(tmp_path / "d", subject_pattern="^S")


# --------------------------------------------------------------------------------------------------
# Synthetic faces and the registry
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("synthetic")
    train = write_synthetic_dataset(base / "train", num_images=9, size=32, num_identities=3, usage="Training")
    test = write_synthetic_dataset(base / "test", 7, size=32, num_identities=2, seed=1, identity_offset=3,
                                   usage="PrivateTest")
    return train, test


def test_synthetic_reader_labels_votes_subjects(synthetic_roots):
    train_root, test_root = synthetic_roots
    data = read_synthetic(train_root)
    assert data.classes == EXPRESSIONS[:7] and list(data.splits) == ["train"]
    with (train_root / "meta.csv").open() as handle:
        meta = {row["Image name"]: row for row in csv.DictReader(handle)}
    assert len(data.split("train")) == 9
    for sample in data.split("train"):
        assert sample.key.split("/")[0] == EXPRESSIONS[sample.label]
        assert int(meta[sample.key]["label"]) == sample.label and sample.subject == meta[sample.key]["identity"]
        assert sample.votes.shape == (10,) and sample.votes.sum() == 10
    merged = read_synthetic_roots([train_root, test_root])
    assert {k: len(v) for k, v in merged.splits.items()} == {"train": 9, "test": 7}
    assert all(s.key.startswith("test/") for s in merged.split("test"))
    assert {s.subject for s in merged.split("train")}.isdisjoint({s.subject for s in merged.split("test")})
    assert load_sample_image(merged.split("test")[0]).size == (32, 32)


def test_synthetic_reader_errors(tmp_path, synthetic_roots):
    with pytest.raises(FraferError, match=r"meta\.csv does not exist"):
        read_synthetic(tmp_path)
    with pytest.raises(FraferError, match="at least one folder"):
        read_synthetic_roots([])
    root = tmp_path / "copy"
    root.mkdir()
    text = (synthetic_roots[0] / "votes.csv").read_text().replace("Training", "Train", 1)
    (root / "votes.csv").write_text(text)
    (root / "meta.csv").write_text((synthetic_roots[0] / "meta.csv").read_text())
    with pytest.raises(FraferError, match=r"votes\.csv line 2: Usage must be one of"):
        read_synthetic(root)


def test_registry_dispatches_and_checks_options(tmp_path, synthetic_roots):
    assert set(FER_FORMATS) == {"affectnet", "rafdb", "fer2013", "ferplus", "folders", "synthetic"}
    data = read_fer_dataset("rafdb", make_rafdb(tmp_path / "raf"))
    assert data.name == "RAF-DB basic" and len(data.split("train")) == 7
    assert read_fer_dataset("affectnet", make_affectnet(tmp_path / "aff"), num_classes=8).classes == EXPRESSIONS
    merged = read_fer_dataset("synthetic", list(synthetic_roots))
    assert set(merged.splits) == {"train", "test"}
    with pytest.raises(FraferError, match="unknown FER dataset format 'ckplus'; choose one of affectnet, rafdb"):
        read_fer_dataset("ckplus", tmp_path)
    with pytest.raises(FraferError, match="unknown option 'classes' for FER format 'affectnet'.*num_classes"):
        read_fer_dataset("affectnet", tmp_path, classes=7)
    with pytest.raises(FraferError, match="reads one root folder"):
        read_fer_dataset("rafdb", [tmp_path, tmp_path])
