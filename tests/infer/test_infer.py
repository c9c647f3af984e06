"""predict: detectors on real photos, framing, batch-independent heatmaps, statuses, outputs, ONNX, video, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from frafer.artifacts.bundle import load_bundle
from frafer.artifacts.onnx_export import export_onnx
from frafer.cli import main
from frafer.config.loader import build_config, load_config
from frafer.config.schema import FinetuneConfig
from frafer.data.fer.framing import FER2013_TEMPLATE, FRAMINGS, Framing
from frafer.data.fer.labels import BASIC_EXPRESSIONS
from frafer.data.synthetic.renderer import compose_group_picture, render_face, write_synthetic_dataset
from frafer.errors import FraferError
from frafer.infer import batch as batch_module
from frafer.infer.batch import csv_header, run_predict
from frafer.infer.detect import build_detector, haar_detector, mtcnn_detector
from frafer.infer.face_crop import crop_face, face_transform, square_box
from frafer.infer.predictor import Predictor
from frafer.models.fra_networks import Network
from frafer.train.finetune import finetune
from frafer.train.pretrain import pretrain
from tests.conftest import AUG_OFF, TINY_FRA, tiny_model_config
from tests.conftest import TINY_FINETUNE as TINY

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency (pip install -e .[dev])")

CLASSES = ["neutral", "happy"]
GAIN = 3.0  # salient expressions, as a model would need them


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def detectable():
    """Synthetic faces (80 px) that MTCNN finds on their own, by label: cartoon faces are found far less often
    than photos (about half of them), so group pictures are made of faces the detector can see."""
    detector = mtcnn_detector()
    found = {label: [] for label in CLASSES}
    rng = np.random.default_rng(0)
    for k in range(60):
        label = CLASSES[k % 2]
        face = render_face(k, BASIC_EXPRESSIONS.index(label), 1.0, rng, size=64, expression_gain=GAIN)
        face = np.asarray(Image.fromarray(face).resize((80, 80), Image.BICUBIC))
        if len(found[label]) < 6 and detector(compose_group_picture([face])[0]):
            found[label].append(face)
    assert all(len(v) >= 3 for v in found.values()), "too few synthetic faces detected to build group pictures"
    return found


@pytest.fixture(scope="module")
def model(detectable, tmp_path_factory):
    """A tiny FRA-pre-trained trunk fine-tuned on the detectable faces (32 px, class folders), until it knows them:
    a bundle with a region model. Labels through the detector path then test that predict frames each face the
    way the classifier saw it."""
    base = tmp_path_factory.mktemp("infer")
    for split in ("train", "val"):
        for label, faces in detectable.items():
            (base / "faces" / split / label).mkdir(parents=True)
            for k, face in enumerate(faces):
                Image.fromarray(face).resize((32, 32), Image.BICUBIC).save(base / "faces" / split / label / f"{k}.png")
    unlabelled = write_synthetic_dataset(base / "unlabelled", 64, size=32, num_identities=8, seed=0)
    pre = base / "pre"
    pretrain(load_config(None, [*TINY_FRA, "data.source=folder", f"data.root={unlabelled}", "train.max_steps=4"]),
             pre)
    cfg = build_config({}, [*TINY, *AUG_OFF, "data.format=folders", "data.framing=synthetic", "model.width=8",
                            f"data.root={base / 'faces'}", f"model.init={pre}", "train.epochs=16", "optim.lr=5e-3",
                            "train.batch_size=4",
                            "optim.warmup_epochs=0"], FinetuneConfig)
    finetune(cfg, base / "ft")
    return base / "ft" / "model_last"


def group_picture(detectable, seed: int, labels: list[str]):
    """Detectable faces with these labels side by side → (RGB image, ground-truth boxes)."""
    faces = [detectable[label][(seed + k) % len(detectable[label])] for k, label in enumerate(labels)]
    return compose_group_picture(faces)


def overlaps(found, truth) -> bool:
    """The detection lies mostly inside the face's tile and is face-sized (tiles include background)."""
    ix = max(0.0, min(found[2], truth[2]) - max(found[0], truth[0]))
    iy = max(0.0, min(found[3], truth[3]) - max(found[1], truth[1]))
    area = (found[2] - found[0]) * (found[3] - found[1])
    return ix * iy >= 0.8 * area and (found[2] - found[0]) >= 0.35 * (truth[2] - truth[0])


# ----------------------------------------------------------------------------------------------- detectors


def test_mtcnn_finds_the_astronaut_with_her_landmarks_in_place():
    faces = mtcnn_detector()(skimage_data.astronaut())
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert face.score > 0.99 and 60 < x2 - x1 < 150
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)
    assert lx < nx < rx and mlx < mrx  # left and right as seen in the image
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose above the mouth


def test_detectors_on_real_face_crops_and_non_faces():
    """scikit-image's LFW subset: 100 real 25 px face crops and 100 non-face patches, upscaled 4×."""
    patches = skimage_data.lfw_subset()
    images = [np.repeat(cv2.resize((p * 255).round().astype(np.uint8), (100, 100),
                                   interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2) for p in patches]
    for detector, min_faces, max_false in ((mtcnn_detector(), 95, 2), (haar_detector(min_face=20), 75, 3)):
        found = [len(detector(im)) > 0 for im in images]
        assert sum(found[:100]) >= min_faces and sum(found[100:]) <= max_false


def test_a_face_free_image_gives_no_face(model, tmp_path):
    Image.new("RGB", (320, 240), (40, 150, 60)).save(tmp_path / "green.jpg")
    summary = run_predict(Predictor.from_bundle(model), [str(tmp_path / "green.jpg")], tmp_path / "out")
    assert summary.statuses == {"no face": 1} and summary.failed == 0


def test_unknown_detector_is_refused():
    with pytest.raises(Exception, match="unknown face detector 'yolo'"):
        build_detector("yolo")


# ----------------------------------------------------------------------------------------------- framing


def test_box_framing_is_square_with_the_margin_on_each_side():
    assert square_box((10, 20, 30, 60), 0.0) == (0.0, 20.0, 40.0, 60.0)
    x1, y1, x2, y2 = square_box((10, 20, 30, 60), 0.25)
    assert (x2 - x1, y2 - y1) == (60.0, 60.0) and (x1 + x2) / 2 == 20.0
    image = np.zeros((100, 100, 3), np.uint8)
    image[20:60, 10:30] = 255  # the box, white
    crop = crop_face(image, Framing("t", margin=0.0), (10, 20, 30, 60), size=40)
    assert crop.shape == (40, 40, 3)
    assert crop[:, 10:30].mean() > 240 and crop[:, :8].mean() < 15 and crop[:, 32:].mean() < 15


def test_aligned_framing_puts_the_landmarks_on_the_template():
    template = np.asarray(FRAMINGS["rafdb"].template) * 100
    angle, scale, shift = 0.3, 1.7, np.array([40.0, 25.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = template @ (scale * rotation).T + shift  # the template rotated, scaled and moved
    matrix = face_transform(FRAMINGS["rafdb"], (0, 0, 1, 1), landmarks, 100)
    mapped = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(mapped - template).max() < 0.5


def test_grey_framing_and_the_fer_presets():
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200
    crop = crop_face(rgb, FRAMINGS["fer2013"], (0, 0, 64, 64), size=48)
    assert crop.shape == (48, 48, 3) and (crop[..., 0] == crop[..., 1]).all() and (crop[..., 1] == crop[..., 2]).all()
    assert FRAMINGS["fer2013"].grey and not FRAMINGS["rafdb"].grey and FRAMINGS["rafdb"].method == "aligned"


def test_fer_alignment_recovers_the_dataset_framing_from_an_upscaled_photo():
    # a 48 px crop shown 4x larger inside a 96 px border: landmarks at FER's template map back onto that crop
    landmarks = np.asarray(FER2013_TEMPLATE) * 192 + 96
    matrix = face_transform(FRAMINGS["fer2013"], (90, 100, 280, 290), landmarks, 48)
    assert np.allclose(matrix, [[0.25, 0, -24], [0, 0.25, -24]], atol=1e-3)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (384, 384, 3), dtype=np.uint8)
    aligned = crop_face(rgb, FRAMINGS["fer2013"], (90, 100, 280, 290), landmarks, size=48)
    boxed = crop_face(rgb, Framing("exact", margin=0.0, grey=True), (96, 96, 288, 288), size=48)
    assert np.abs(aligned.astype(int) - boxed).max() <= 1
    # without landmarks (Haar) the preset falls back to its box, 5 % inside the detector's
    assert np.allclose(face_transform(FRAMINGS["fer2013"], (96, 96, 288, 288), None, 48)[0, 0], 48 / (192 * 0.9))


def test_the_bundle_records_its_framing_and_region_model(model):
    meta = json.loads((model / "bundle.json").read_text())
    assert meta["framing"]["name"] == "synthetic" and meta["regions"]["masks"] == "prototypes"
    bundle = load_bundle(model)
    assert bundle.framing.margin == 0.2 and bundle.regions is not None
    assert list(bundle.classes) == CLASSES
    meta.pop("framing")
    meta["regions"] = None
    (model.parent / "old").mkdir(exist_ok=True)
    (model.parent / "old" / "weights.safetensors").write_bytes((model / "weights.safetensors").read_bytes())
    meta["info"]["data"]["format"] = "fer2013"
    (model.parent / "old" / "bundle.json").write_text(json.dumps(meta))
    old = load_bundle(model.parent / "old")  # a bundle from before the fields: its data format's preset
    assert old.framing.name == "fer2013" and old.regions is None


# ----------------------------------------------------------------------------------------------- heatmaps


def test_mask_prototypes_start_at_the_first_batch_then_follow_an_ema():
    net = Network(tiny_model_config(prototype_momentum=0.9), local=True).train()
    torch.manual_seed(0)
    batches = [torch.randn(4, 3, 32, 32) for _ in range(2)]
    means = []
    for x in batches:
        with torch.no_grad():
            means.append(net.decoder(net.trunk(x)).mean(0))
            net(x)
    assert torch.allclose(net.mask_prototypes, 0.9 * means[0] + 0.1 * means[1], atol=1e-5)
    assert int(net.prototype_updates) == 2
    net.eval()
    with torch.no_grad():
        alone = net(batches[0][:1])["heatmaps"]
        together = net(batches[0])["heatmaps"][:1]
    assert torch.allclose(alone, together, atol=1e-6)  # eval: stored prototypes, not the batch mean


@pytest.mark.parametrize("trunk", ["pretrained", "finetuned"])
def test_a_faces_heatmaps_do_not_depend_on_the_rest_of_its_batch(model, trunk):
    predictor = Predictor.from_bundle(model, heatmaps=True, heatmap_trunk=trunk, detector="none")
    rng = np.random.default_rng(0)
    crops = np.stack([render_face(i, i % 7, 1.0, rng, size=32) for i in range(6)])
    _, alone = predictor.classify_crops(crops[:1])
    _, together = predictor.classify_crops(crops)
    _, reordered = predictor.classify_crops(crops[::-1].copy())
    assert alone.shape[1] == 4 and np.allclose(alone.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(alone[0], together[0], atol=1e-5) and np.allclose(alone[0], reordered[-1], atol=1e-5)


def test_per_face_masks_for_runs_without_prototypes_are_batch_independent_too(model, tmp_path):
    spec = json.loads((model / "bundle.json").read_text())["regions"]
    from frafer.artifacts.regions import _build

    spec = {**spec, "masks": "per_face"}
    regions = _build(spec)
    assert regions.per_face_masks
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(regions(x[:1]), regions(x)[:1], atol=1e-6)


# ----------------------------------------------------------------------------------------------- predict


def test_group_pictures_boxes_and_labels(model, detectable):
    predictor = Predictor.from_bundle(model)
    images, truths, labels = [], [], []
    for seed in range(3):
        names = [CLASSES[(seed + k) % 2] for k in range(3)]
        image, truth = group_picture(detectable, seed, names)
        images.append(image)
        truths.append(truth)
        labels.append(names)
    hits = correct = 0
    for faces, truth, names in zip(predictor.predict(images), truths, labels, strict=True):  # one batched call
        for box, label in zip(truth, names, strict=True):
            match = [f for f in faces if overlaps(f.box, box)]
            hits += len(match) == 1
            correct += len(match) == 1 and match[0].label == label
    print(f"group pictures: {hits} of 9 faces found at their place, {correct} labelled right")
    assert hits >= 6  # of 9: each face found once, at its place
    assert correct >= 0.75 * hits


def test_bad_inputs_get_a_status_and_never_stop_the_batch(model, detectable, tmp_path):
    photos = tmp_path / "photos"
    (photos / "deep" / "er").mkdir(parents=True)
    image, _ = group_picture(detectable, 0, ["neutral", "happy"])
    Image.fromarray(image).save(photos / "group.png")
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "notes.txt").write_text("not a picture")
    (photos / "deep" / "cut.png").write_bytes((photos / "group.png").read_bytes()[:3000])
    Image.fromarray(image).convert("CMYK").save(photos / "deep" / "cmyk.jpg")
    grey16 = (np.asarray(Image.fromarray(image).convert("L"), np.uint16) * 257)
    Image.fromarray(grey16).save(photos / "deep" / "er" / "grey16.png")
    Image.new("RGB", (3000, 3000)).save(photos / "big.png")
    summary = run_predict(Predictor.from_bundle(model, max_pixels=4_000_000), [str(photos)], tmp_path / "out")
    lines = {Path(x["file"]).name: x for x in map(json.loads, (tmp_path / "out" / "predictions.jsonl").open())}
    assert {k: v["status"] for k, v in lines.items()} == {
        "group.png": "ok", "empty.jpg": "not an image", "notes.txt": "not an image", "cut.png": "corrupt",
        "cmyk.jpg": lines["cmyk.jpg"]["status"], "grey16.png": lines["grey16.png"]["status"], "big.png": "too large"}
    assert lines["cmyk.jpg"]["status"] in ("ok", "no face") and lines["grey16.png"]["status"] in ("ok", "no face")
    assert summary.failed == 4 and summary.files == 7
    assert "4,000,000" in lines["big.png"]["reason"]
    assert main(["predict", str(model), str(photos), "--out", str(tmp_path / "cli"), "--max-pixels", "4000000"]) == 1
    assert main(["predict", str(model), str(photos / "group.png"), "--out", str(tmp_path / "one")]) == 0


def test_json_and_csv_schema(model, detectable, tmp_path):
    image, _ = group_picture(detectable, 1, ["neutral", "happy", "neutral"])
    Image.fromarray(image).save(tmp_path / "g.png")
    run_predict(Predictor.from_bundle(model), [str(tmp_path / "g.png")], tmp_path / "out")
    line = json.loads((tmp_path / "out" / "predictions.jsonl").read_text())
    assert set(line) == {"file", "frame", "time", "status", "reason", "faces"} and line["faces"]
    face = line["faces"][0]
    assert set(face) == {"face", "box", "landmarks", "score", "label", "confidence", "probabilities"}
    assert list(face["probabilities"]) == CLASSES and abs(sum(face["probabilities"].values()) - 1) < 1e-3
    assert len(face["landmarks"]) == 5 and face["label"] == max(face["probabilities"], key=face["probabilities"].get)
    with (tmp_path / "out" / "faces.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == csv_header(CLASSES) and len(rows) == len(line["faces"])
    assert float(rows[0]["confidence"]) == face["confidence"]
    assert (tmp_path / "out" / "annotated" / "g.jpg").is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["faces"] == len(rows)


def test_heatmap_panels_are_written(model, detectable, tmp_path):
    image, _ = group_picture(detectable, 2, ["neutral", "happy"])
    Image.fromarray(image).save(tmp_path / "g.png")
    assert main(["predict", str(model), str(tmp_path / "g.png"), "--heatmaps", "--out", str(tmp_path / "o")]) == 0
    faces = len(json.loads((tmp_path / "o" / "predictions.jsonl").read_text())["faces"])
    panels = sorted((tmp_path / "o" / "heatmaps").glob("g_face*.png"))
    assert len(panels) == faces >= 1
    grid = Image.open(tmp_path / "o" / "heatmaps" / "g_grid.png")
    # a Grad-CAM row [crop | CAM] above the region row [crop | 4 regions | argmax map], 32 px crops at 6× (192 px)
    panel = Image.open(panels[0])
    assert panel.width == 6 * 32 * 6 and panel.height > 2 * 32 * 6 and grid.height >= faces * 2 * 32 * 6


def test_python_api_and_cli_agree(model, detectable, tmp_path):
    paths = []
    for seed in range(2):
        image, _ = group_picture(detectable, seed + 5, ["happy", "neutral"])
        paths.append(tmp_path / f"p{seed}.png")
        Image.fromarray(image).save(paths[-1])
    api = Predictor.from_bundle(model).predict([str(p) for p in paths])
    assert main(["predict", str(model), *map(str, paths), "--out", str(tmp_path / "cli")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "cli" / "predictions.jsonl").read_text().splitlines()]
    for faces, line in zip(api, lines, strict=True):
        assert [f.label for f in faces] == [f["label"] for f in line["faces"]]
        assert np.allclose([f.confidence for f in faces], [f["confidence"] for f in line["faces"]], atol=1e-4)
    bgr = np.asarray(Image.open(paths[0]))[..., ::-1]
    from_bgr = Predictor.from_bundle(model).predict(bgr, colour="BGR")[0]
    assert [f.label for f in from_bgr] == [f.label for f in api[0]]


def test_an_interrupted_run_resumes_after_its_last_finished_file(model, detectable, tmp_path, fail_on_call):
    photos = tmp_path / "photos"
    photos.mkdir()
    for seed in range(3):
        Image.fromarray(group_picture(detectable, seed, ["happy"])[0]).save(photos / f"{seed}.png")
    # stop inside the third file, after its line was written: the resume must drop it
    restore = fail_on_call(batch_module, "write_pictures", 3, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run_predict(Predictor.from_bundle(model), [str(photos)], tmp_path / "out", chunk_files=2)
    assert len((tmp_path / "out" / "done.txt").read_text().splitlines()) == 2
    restore()
    summary = run_predict(Predictor.from_bundle(model), [str(photos)], tmp_path / "out", resume=True)
    assert summary.files == 3  # the summary describes the whole folder, not only the resumed part
    files = [json.loads(x)["file"] for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(files) == sorted(str(photos / f"{s}.png") for s in range(3))  # each once


# ----------------------------------------------------------------------------------------------- ONNX, video


def test_onnx_export_matches_pytorch_and_predicts_the_same(model, detectable, tmp_path):
    bundle = load_bundle(model)
    rng = np.random.default_rng(0)
    crops = np.stack([render_face(i, i % 7, 1.0, rng, size=32) for i in range(8)])
    faces = torch.from_numpy(Predictor(bundle, detector="none").normalise(crops))
    report = export_onnx(bundle, tmp_path / "m.onnx", with_regions=True, check_inputs=faces)
    assert report["outputs"] == ["logits", "heatmaps"] and max(report["max_abs_diff"].values()) < 1e-4
    image, _ = group_picture(detectable, 3, ["neutral", "happy"])
    eager = Predictor(bundle).predict(image)[0]
    onnx = Predictor(bundle, backend="onnx", onnx_path=tmp_path / "m.onnx",
                     providers=["CPUExecutionProvider"]).predict(image)[0]
    assert [f.label for f in eager] == [f.label for f in onnx]
    assert np.allclose([f.probabilities for f in eager], [f.probabilities for f in onnx], atol=1e-4)
    with pytest.raises(Exception, match="no execution provider NoSuchProvider"):
        Predictor(bundle, backend="onnx", onnx_path=tmp_path / "m.onnx", providers=["NoSuchProvider"])
    assert main(["export", str(model), "--onnx", str(tmp_path / "cli.onnx")]) == 0


def test_a_video_round_trip(model, detectable, tmp_path):
    image, _ = group_picture(detectable, 0, ["neutral", "happy"])
    h, w = image.shape[:2]
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
    for t in range(12):
        writer.write(cv2.cvtColor(np.roll(image, 2 * t, axis=1), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    assert main(["predict", str(model), str(path), "--every", "3", "--smooth", "0.5", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == [0, 3, 6, 9]
    assert lines[1]["time"] == pytest.approx(0.3)
    with (out / "timelines" / "clip.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows and {r["frame"] for r in rows} <= {"0", "3", "6", "9"}
    tracks = {r["track"] for r in rows}
    assert len(tracks) <= 3  # the same faces keep their tracks across frames
    annotated = cv2.VideoCapture(str(out / "annotated" / "clip.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 12


def test_the_demos_group_pictures_are_predicted_and_scored(model, tmp_path):
    from frafer.demo import predict_group_pictures

    result = predict_group_pictures(model, tmp_path / "predict", range(500, 520), size=40, gain=GAIN, pictures=2,
                                    per_picture=2)
    assert result["files"] == 2 and result["faces"] == 4
    assert result["labelled_right"] <= result["found"] <= result["faces"] and result["found"] >= 2
    lines = [json.loads(x) for x in (tmp_path / "predict" / "predictions.jsonl").read_text().splitlines()]
    with_faces = sum(1 for x in lines if x["faces"])
    assert with_faces >= 1 and len(list((tmp_path / "predict" / "heatmaps").glob("*_grid.png"))) == with_faces
    assert len(list((tmp_path / "predict" / "annotated").glob("*.jpg"))) == 2


def test_predict_can_cut_faces_with_another_framing_than_the_bundle_records(model):
    bundle = load_bundle(model)
    assert Predictor(bundle, detector="none").framing == bundle.framing == FRAMINGS["synthetic"]
    assert Predictor(bundle, detector="none", framing="fer2013").framing == FRAMINGS["fer2013"]
    with pytest.raises(FraferError, match="unknown framing 'nosuch'"):
        Predictor(bundle, detector="none", framing="nosuch")
