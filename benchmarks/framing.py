"""What face framing does to accuracy when a dataset's faces come through the detector instead of its own crops.

A model trained on a dataset's crops (FER+'s tight 48 px faces, say) meets, in `predict`, faces cut from photos by a
detector. This measures the gap on labelled faces: each face of a split is scored

    dataset crop   as evaluate sees it (the crop the dataset ships, resized as in training)
    detector path  upscaled `--upscale` times (a photo's face is rarely 48 px), set in a border of `--pad` of its
                   side (a face in a scene, not filling the frame), found by MTCNN, and cut with each framing
                   (box with margins, or 5-point alignment), grey as in training

and prints, per framing, the accuracy on the faces the detector found and over all faces (a miss counts as wrong),
plus the detector's hit rate. Choose framings on the validation split; report the test split once.

    python benchmarks/framing.py runs/ferplus_ft/model --format ferplus --root /data/FERPlus --split val
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
from tqdm import tqdm

from frafer.artifacts.bundle import load_bundle
from frafer.data.fer.dataset import load_sample_image
from frafer.data.fer.framing import ALIGNED_TEMPLATE, Framing
from frafer.data.fer.labels import EXPRESSIONS
from frafer.data.readers.fer_formats import read_fer_dataset
from frafer.engine.machine import set_threads
from frafer.infer.detect import mtcnn_detector
from frafer.infer.face_crop import crop_face
from frafer.infer.predictor import Predictor

MARGINS = (-0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3)


def framings(grey: bool, dataset_template) -> list[Framing]:
    boxes = [Framing(f"box {m:+.2f}", "box", margin=m, grey=grey) for m in MARGINS]
    aligned = [Framing("aligned, 112 px template", "aligned", grey=grey, template=ALIGNED_TEMPLATE)]
    if dataset_template is not None:
        aligned.append(Framing("aligned, dataset's template", "aligned", grey=grey, template=dataset_template))
    return boxes + aligned


def as_photo(rgb: np.ndarray, upscale: float, pad: float) -> np.ndarray:
    """A dataset crop → a larger picture with the face inside a replicated border, as a detector would see it."""
    big = cv2.resize(rgb, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    p = int(round(pad * big.shape[0]))
    return cv2.copyMakeBorder(big, p, p, p, p, cv2.BORDER_REPLICATE)


def crop_landmarks(rgb: np.ndarray, detect, upscale: float, pad: float) -> np.ndarray | None:
    """MTCNN's 5 landmarks of the best face in `rgb` shown as a photo (`as_photo`), in the crop's own pixels."""
    faces = [f for f in detect(as_photo(rgb, upscale, pad)) if f.landmarks is not None]
    if not faces:
        return None
    marks = np.asarray(max(faces, key=lambda f: f.score).landmarks, np.float64)
    return (marks - round(pad * rgb.shape[0] * upscale)) / upscale


def dataset_template(samples, detect, upscale: float, pad: float):
    """The mean 5 landmarks of the dataset's own crops, in unit coordinates of the crop: aligning detected faces
    onto it reproduces the dataset's framing (scale, centre and roll) from the landmarks alone."""
    points = []
    for sample in tqdm(samples, desc="template faces", unit="face"):
        rgb = np.asarray(load_sample_image(sample).convert("RGB"))
        marks = crop_landmarks(rgb, detect, upscale, pad)
        if marks is not None:
            points.append(marks / np.array(rgb.shape[1::-1], np.float64))
    if not points:
        return None
    mean = np.mean(points, axis=0)
    print(f"dataset template from {len(points)} of {len(samples)} faces: "
          + ", ".join(f"({x:.4f}, {y:.4f})" for x, y in mean))
    return tuple((float(x), float(y)) for x, y in mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--format", required=True, help="data.format of the labelled faces (ferplus, fer2013, ...)")
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="val", help="val to choose a framing, test to report one")
    parser.add_argument("--upscale", type=float, default=4.0)
    parser.add_argument("--pad", type=float, default=0.5, help="border around the face, as a fraction of its side")
    parser.add_argument("--min-face", type=int, default=20)
    parser.add_argument("--limit", type=int, default=0, help="first N faces of the split only (0 = all)")
    parser.add_argument("--template-faces", type=int, default=1000,
                        help="first N faces of the train split (labels unused) give the dataset's landmark template")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    set_threads(args.threads)

    bundle = load_bundle(args.bundle)
    predictor = Predictor(bundle, detector="none")
    detect = mtcnn_detector(min_face=args.min_face)
    dataset = read_fer_dataset(args.format, args.root, num_classes=len(bundle.classes))
    samples = [s for s in dataset.split(args.split) if EXPRESSIONS[s.label] in bundle.classes]
    if args.limit:
        samples = samples[:args.limit]
    labels = np.array([bundle.classes.index(EXPRESSIONS[s.label]) for s in samples])
    template_source = dataset.split("train")[:args.template_faces] if args.template_faces else []
    template = dataset_template(template_source, detect, args.upscale, args.pad) if template_source else None
    choices = framings(bundle.framing.grey, template)
    size = bundle.input_size

    dataset_crops = np.zeros((len(samples), size, size, 3), np.uint8)
    cut = {f.name: np.zeros((len(samples), size, size, 3), np.uint8) for f in choices}
    found = np.zeros(len(samples), bool)
    detect_seconds = 0.0
    for i, sample in enumerate(tqdm(samples, desc=f"{args.split} faces", unit="face")):
        rgb = np.asarray(load_sample_image(sample).convert("RGB"))
        dataset_crops[i] = predictor.crop(rgb, None)
        photo = as_photo(rgb, args.upscale, args.pad)
        start = time.perf_counter()
        faces = detect(photo)
        detect_seconds += time.perf_counter() - start
        if not faces:
            continue
        face = max(faces, key=lambda f: f.score)
        found[i] = True
        for framing in choices:
            cut[framing.name][i] = crop_face(photo, framing, face.box, face.landmarks, size)

    def accuracy(crops: np.ndarray, mask: np.ndarray) -> float:
        if not mask.any():
            return float("nan")
        probs, _ = predictor.classify_crops(crops[mask])
        return 100.0 * float((probs.argmax(1) == labels[mask]).mean())

    n, hits = len(samples), int(found.sum())
    print(f"{dataset.name}, split {args.split}: {n} faces; MTCNN found {hits} ({100 * hits / n:.1f} %) after "
          f"{args.upscale:g}x upscaling and a {args.pad:g} border, {1000 * detect_seconds / n:.1f} ms per picture")
    print(f"bundle framing: {bundle.framing.name} ({bundle.framing.method}, margin {bundle.framing.margin:g}, "
          f"grey {bundle.framing.grey})")
    print("| crop | accuracy on found faces | accuracy on all faces (miss = wrong) |")
    print("|---|---:|---:|")
    everyone = np.ones(n, bool)
    print(f"| dataset crop | {accuracy(dataset_crops, found):.2f} | {accuracy(dataset_crops, everyone):.2f} (no "
          "detector) |")
    for framing in choices:
        on_found = accuracy(cut[framing.name], found)
        print(f"| {framing.name} | {on_found:.2f} | {on_found * hits / n:.2f} |")


if __name__ == "__main__":
    main()
