"""predict, export and bundles under hostile input: named one-line errors, a status for every file, and a summary
that describes the whole output folder after any sequence of interruptions and resumes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frafer.artifacts.bundle import load_bundle, save_bundle
from frafer.artifacts.trunk_init import TrunkLayout
from frafer.cli import main
from frafer.errors import FraferError
from frafer.infer import batch as batch_module
from frafer.infer.batch import run_predict
from frafer.infer.inputs import read_image
from frafer.infer.predictor import OnnxBackend, Predictor
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier

CLASSES = ["neutral", "happy", "sad"]


def make_bundle(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = FERClassifier(build_trunk("resnet18", width=4, remove_maxpool=True), len(CLASSES), head_init_std=0.5)
    return save_bundle(folder, model.eval(), CLASSES, 32, (0.5,) * 3, (0.25,) * 3,
                       TrunkLayout("resnet18", (2, 2, 2, 2), 4, True))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b")


def faces(folder: Path, names) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 32, 3), 40 * k % 255, np.uint8)).save(path)
        out.append(path)
    return out


def predict(bundle, *args) -> int:
    return main(["predict", "--model", str(bundle), "--no-detect", *map(str, args)])


def one_line_error(capsys) -> str:
    """The one error line on stderr (progress-bar lines aside), with no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("frafer: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# ----------------------------------------------------------------------------------------------- option values


@pytest.mark.parametrize("option, value, words", [
    ("--every", "0", "--every"), ("--every", "-1", "--every"), ("--smooth", "2", "--smooth"),
    ("--smooth", "-0.1", "--smooth"), ("--batch-size", "0", "--batch-size"), ("--batch-size", "-3", "--batch-size"),
    ("--max-pixels", "0", "--max-pixels"), ("--max-pixels", "-1", "--max-pixels"), ("--min-face", "-5", "--min-face"),
    ("--threads", "-2", "--threads"), ("--device", "nosuch", "--device"), ("--device", "cuda:99", "--device"),
])
def test_every_option_value_is_checked(bundle, tmp_path, capsys, option, value, words):
    (img,) = faces(tmp_path / "in", ["a.png"])
    assert predict(bundle, img, "--out", tmp_path / "o", option, value) == 2
    assert words in one_line_error(capsys)
    assert not (tmp_path / "o" / "predictions.jsonl").exists()


def test_cuda_without_cuda_is_refused(bundle, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal cannot be shown here")
    (img,) = faces(tmp_path / "in", ["a.png"])
    assert predict(bundle, img, "--out", tmp_path / "o", "--device", "cuda") == 2
    assert "no CUDA" in one_line_error(capsys)


def test_out_that_is_a_file_or_cannot_be_written(bundle, tmp_path, capsys):
    (img,) = faces(tmp_path / "in", ["a.png"])
    (tmp_path / "file").write_text("x")
    assert predict(bundle, img, "--out", tmp_path / "file") == 2
    assert "is a file" in one_line_error(capsys)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root): permissions cannot be shown")
        assert predict(bundle, img, "--out", locked / "o") == 2
        assert "cannot write" in one_line_error(capsys)
    finally:
        locked.chmod(0o700)


def test_a_write_error_part_way_stops_with_one_line_and_keeps_what_was_done(bundle, tmp_path, capsys, fail_on_call):
    images = faces(tmp_path / "in", [f"{k}.png" for k in range(4)])
    restore = fail_on_call(batch_module, "write_pictures", 3, OSError(28, "No space left on device"))
    assert predict(bundle, tmp_path / "in", "--out", tmp_path / "o") == 2
    assert "No space left" in one_line_error(capsys)
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["files"] == 2
    restore()
    assert predict(bundle, tmp_path / "in", "--out", tmp_path / "o", "--resume") == 0
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["files"] == len(images)


# ----------------------------------------------------------------------------------------------- file names, walks


def test_a_file_name_that_is_not_utf8_is_written_and_resumed(bundle, tmp_path):
    folder = tmp_path / "in"
    faces(folder, ["a.png"])
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / odd)
    assert predict(bundle, folder, "--out", tmp_path / "o") == 0
    lines = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(line["file"] for line in lines) == sorted([str(folder / "a.png"), str(folder) + "/caf\\xe9.png"])
    assert all(line["status"] == "ok" for line in lines)
    (tmp_path / "o" / "faces.csv").read_text(encoding="utf-8")  # valid UTF-8 throughout
    assert predict(bundle, folder, "--out", tmp_path / "o", "--resume") == 0
    assert len((tmp_path / "o" / "predictions.jsonl").read_text().splitlines()) == 2


def test_links_that_lead_nowhere_get_a_status(bundle, tmp_path):
    folder = tmp_path / "in"
    faces(folder, ["a.png"])
    os.symlink(folder / "missing.png", folder / "dangling.png")
    os.symlink(folder / "loop.png", folder / "loop.png")
    os.symlink(folder, folder / "back")  # a link to a folder above: not followed, no endless walk
    assert predict(bundle, folder, "--out", tmp_path / "o") == 1
    lines = {Path(json.loads(x)["file"]).name: json.loads(x)
             for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()}
    assert set(lines) == {"a.png", "dangling.png", "loop.png"}
    assert lines["dangling.png"]["status"] == lines["loop.png"]["status"] == "unreadable"
    with pytest.raises(Exception) as caught:
        read_image(folder / "loop.png")
    assert caught.value.status == "unreadable"  # named on the command line too, not "corrupt"


def test_no_two_inputs_write_the_same_picture(bundle, tmp_path):
    faces(tmp_path / "d1", ["x.jpg"])
    faces(tmp_path / "d2", ["x.jpg"])
    faces(tmp_path / "d3", ["face.jpg", "face.png", "FACE.png"])
    assert predict(bundle, tmp_path / "d1", tmp_path / "d2", tmp_path / "d3", "--heatmaps", "--out",
                   tmp_path / "o") == 0
    annotated = sorted(p.name for p in (tmp_path / "o" / "annotated").rglob("*.jpg"))
    assert len(annotated) == 5 == len(set(n.lower() for n in annotated))
    panels = list((tmp_path / "o" / "heatmaps").rglob("*_face0.png"))
    assert len(panels) == 5


# ----------------------------------------------------------------------------------------------- resume


def lines_of(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def test_summary_and_exit_code_describe_the_whole_folder_across_resumes(bundle, tmp_path, fail_on_call):
    folder = tmp_path / "in"
    faces(folder, ["a.png", "b.png", "d.png"])
    (folder / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # a failing file, listed before the crash
    restore = fail_on_call(batch_module, "write_pictures", 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_predict(Predictor.from_bundle(bundle, detector="none"), [str(folder)], tmp_path / "o", chunk_files=1)
    restore()
    assert predict(bundle, folder, "--out", tmp_path / "o", "--resume") == 1  # c.png failed, before the resume
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["files"] == 4 and summary["failed"] == 1 and summary["statuses"] == {"ok": 3, "not an image": 1}
    # resuming a finished folder changes nothing
    assert predict(bundle, folder, "--out", tmp_path / "o", "--resume") == 1
    again = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert {k: again[k] for k in ("files", "failed", "statuses", "faces")} == \
        {k: summary[k] for k in ("files", "failed", "statuses", "faces")}
    assert sorted(Path(x["file"]).name for x in lines_of(tmp_path / "o")) == ["a.png", "b.png", "c.png", "d.png"]


@pytest.mark.parametrize("cut", ["predictions.jsonl", "faces.csv", "done.txt", "files.jsonl"])
def test_a_crash_in_the_middle_of_a_line_is_recovered(bundle, tmp_path, cut):
    folder = tmp_path / "in"
    faces(folder, ["a.png", "b.png", "c.png"])
    assert predict(bundle, folder, "--out", tmp_path / "o") == 0
    path = tmp_path / "o" / cut
    text = path.read_bytes()
    path.write_bytes(text[: len(text) - 7])  # the last line cut short, as a kill during a write leaves it
    assert predict(bundle, folder, "--out", tmp_path / "o", "--resume") == 0
    names = sorted(Path(x["file"]).name for x in lines_of(tmp_path / "o"))
    assert names == ["a.png", "b.png", "c.png"]
    rows = (tmp_path / "o" / "faces.csv").read_text().splitlines()
    assert len(rows) == 4 and all(r.count(",") == rows[0].count(",") for r in rows)
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["files"] == 3


def test_a_resume_never_mixes_two_models(bundle, tmp_path, capsys):
    other = make_bundle(tmp_path / "other", seed=1)
    folder = tmp_path / "in"
    faces(folder, ["a.png"])
    assert predict(bundle, folder, "--out", tmp_path / "o") == 0
    faces(folder, ["b.png"])
    assert predict(other, folder, "--out", tmp_path / "o", "--resume") == 2
    err = one_line_error(capsys)
    assert str(bundle) in err and str(other) in err
    assert len(lines_of(tmp_path / "o")) == 1


# ----------------------------------------------------------------------------------------------- images


def test_max_pixels_can_be_raised_above_pillows_own_limit(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (15000, 12500)).save(path)  # 187.5 MP: above Pillow's 179 MP bomb limit
    with pytest.raises(Exception) as caught:
        read_image(path)
    assert caught.value.status == "too large"
    rgb = read_image(path, max_pixels=200_000_000)
    assert rgb.shape == (12500, 15000, 3)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's limit is left as it was


# ----------------------------------------------------------------------------------------------- bundles


def edit_record(bundle: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "edited"
    copy.mkdir()
    for f in bundle.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    meta = json.loads((copy / "bundle.json").read_text())
    meta = change(meta)
    (copy / "bundle.json").write_text(json.dumps(meta))
    return copy


@pytest.mark.parametrize("field, change", [
    ("input_size", lambda m: m | {"input_size": -32}), ("input_size", lambda m: m | {"input_size": 0}),
    ("input_size", lambda m: m | {"input_size": 10 ** 9}), ("<top level>", lambda m: [m]),
    ("version", lambda m: m | {"version": "1"}), ("mean", lambda m: m | {"mean": [0.5, 0.5]}),
    ("std", lambda m: m | {"std": [0.2, 0.0, 0.2]}),
    ("trunk.width", lambda m: m | {"trunk": m["trunk"] | {"width": -4}}),
    ("classes", lambda m: m | {"classes": ["a", "a", "b"]}),
    ("trunk.blocks", lambda m: m | {"trunk": m["trunk"] | {"blocks": [2]}}),
    ("dropout", lambda m: m | {"dropout": 3}), ("framing", lambda m: m | {"framing": [1]}),
])
def test_every_bundle_field_is_checked_on_load(bundle, tmp_path, capsys, field, change):
    bad = edit_record(bundle, tmp_path, change)
    with pytest.raises(FraferError, match=f"field '{field}'"):
        load_bundle(bad)
    (img,) = faces(tmp_path / "in", ["a.png"])
    assert predict(bad, img, "--out", tmp_path / "o") == 2
    one_line_error(capsys)
    assert main(["export", str(bad), "--onnx", str(tmp_path / "m.onnx")]) == 2
    one_line_error(capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_bad_onnx_files_are_named_errors(bundle, tmp_path):
    with pytest.raises(FraferError, match="does not exist"):
        OnnxBackend(tmp_path / "missing.onnx")
    (tmp_path / "not.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(FraferError, match="onnxruntime cannot load"):
        OnnxBackend(tmp_path / "not.onnx")


def test_a_newline_in_a_file_name_keeps_one_record_per_line(bundle, tmp_path):
    folder = tmp_path / "in"
    faces(folder, ["two\nlines.png", "b.png"])
    assert predict(bundle, folder, "--out", tmp_path / "o") == 0
    assert predict(bundle, folder, "--out", tmp_path / "o", "--resume") == 0
    rows = (tmp_path / "o" / "faces.csv").read_text().splitlines()
    assert len(rows) == 3 and any("two\\x0alines.png" in r for r in rows)
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["files"] == 2


# ----------------------------------------------------------------------------------------------- video


def write_avi(path: Path, frames: int = 40) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def test_cut_videos_say_so(bundle, tmp_path):
    (tmp_path / "in").mkdir()
    whole = write_avi(tmp_path / "in" / "whole.avi")
    data = whole.read_bytes()
    (tmp_path / "in" / "stub.avi").write_bytes(data[:200])  # the header cut: nothing to open
    (tmp_path / "in" / "half.avi").write_bytes(data[: len(data) // 2])  # half the frames gone
    assert main(["predict", "--model", str(bundle), str(tmp_path / "in"), "--detector", "haar", "--out",
                 str(tmp_path / "o"), "--no-annotate"]) == 1
    records = map(json.loads, (tmp_path / "o" / "files.jsonl").read_text().splitlines())
    files = {Path(r["file"]).name: r for r in records}
    assert files["stub.avi"]["status"] == "corrupt"
    assert files["whole.avi"]["status"] == "no face" and "could not be decoded" not in files["whole.avi"]["reason"]
    half = files["half.avi"]
    assert half["status"] == "no face" and "could not be decoded" in half["reason"], half
