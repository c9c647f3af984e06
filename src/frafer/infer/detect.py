"""Face detectors behind one small interface: an RGB image in, a list of `Face` out, best first.

    haar   OpenCV's frontal-face Haar cascade (ships inside opencv-python-headless 4.x): fast, boxes only
    mtcnn  MTCNN (frafer.infer.mtcnn, weights from the MIT `mtcnn` wheel): slower, boxes + 5 landmarks
    none   the whole image is one face: crops that are already faces (dataset images)

Nothing is downloaded: each model is a file inside an installed wheel. Measured on scikit-image's real photos
(`benchmarks/predict.py --detectors`): MTCNN finds 98 of LFW's 100 face crops and 0 of its 100 non-face patches;
the cascade 83 and 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from frafer.errors import FraferError

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")  # as seen in the image


@dataclass
class Face:
    """One detected face in image pixels: box x1 y1 x2 y2, a detector score, landmarks (5, 2) x y or None."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray | None = None


Detector = Callable[[np.ndarray], list[Face]]  # (H, W, 3) uint8 RGB → faces, best first


def haar_detector(min_face: int = 24, scale_factor: float = 1.1, min_neighbors: int = 5) -> Detector:
    """OpenCV's `haarcascade_frontalface_default.xml`; its score is the last stage's weight, not a probability."""
    import cv2

    if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
        raise FraferError(f"OpenCV {cv2.__version__} has no Haar cascades (5.x dropped them): "
                          "pip install 'opencv-python-headless>=4.9,<5'")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise FraferError("OpenCV's frontal-face Haar cascade did not load from cv2.data.haarcascades")

    def detect(rgb: np.ndarray) -> list[Face]:
        grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes, _, weights = cascade.detectMultiScale3(
            grey, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_face, min_face),
            outputRejectLevels=True)
        faces = [Face((float(x), float(y), float(x + w), float(y + h)), float(s))
                 for (x, y, w, h), s in zip(boxes, np.ravel(weights), strict=True)]
        return sorted(faces, key=lambda f: -f.score)

    return detect


def mtcnn_detector(min_face: int = 20, min_score: float = 0.9) -> Detector:
    """MTCNN with its usual stage thresholds (0.6, 0.7, 0.8); faces below `min_score` are dropped."""
    from frafer.infer.mtcnn import load_mtcnn_weights, mtcnn_detect

    load_mtcnn_weights()  # fail now, not on the first image, if the weights are missing

    def detect(rgb: np.ndarray) -> list[Face]:
        boxes, scores, landmarks = mtcnn_detect(rgb, min_face=min_face)
        return [Face(tuple(float(v) for v in b), float(s), lm.astype(np.float32))
                for b, s, lm in zip(boxes, scores, landmarks, strict=True) if s >= min_score]

    return detect


def whole_image_detector() -> Detector:
    """`--no-detect`: the image is the face (score 1, no landmarks)."""

    def detect(rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        return [Face((0.0, 0.0, float(w), float(h)), 1.0)]

    return detect


DETECTORS: dict[str, Callable[..., Detector]] = {
    "mtcnn": mtcnn_detector, "haar": haar_detector, "none": whole_image_detector,
}


def build_detector(name: str, **options) -> Detector:
    if name not in DETECTORS:
        raise FraferError(f"unknown face detector '{name}' (known: {', '.join(DETECTORS)})")
    return DETECTORS[name](**options)
