"""Cutting a detected face the way a bundle's training faces were framed (`frafer.data.fer.framing.Framing`)."""

from __future__ import annotations

import cv2
import numpy as np

from frafer.data.fer.framing import Framing


def square_box(box, margin: float) -> tuple[float, float, float, float]:
    """x1 y1 x2 y2 → the square of the longer side, grown by `margin` of that side on each side, same centre."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def face_transform(framing: Framing, box, landmarks, size: int) -> np.ndarray:
    """The 2×3 affine map from image pixels to the (size, size) crop of this face."""
    if framing.method == "aligned" and landmarks is not None:
        target = np.asarray(framing.template, np.float32) * size
        matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32), target, method=cv2.LMEDS)
        if matrix is not None:
            return matrix
    x1, y1, x2, y2 = square_box(box, framing.margin)
    scale = size / max(x2 - x1, 1e-6)
    return np.array([[scale, 0, -x1 * scale], [0, scale, -y1 * scale]], np.float32)


def crop_face(rgb: np.ndarray, framing: Framing, box, landmarks=None, size: int = 112) -> np.ndarray:
    """(H, W, 3) uint8 RGB → the (size, size, 3) crop of one face, framed as `framing` says.

    Pixels outside the image repeat the border (a face at the edge keeps its shape); grey framings return the
    luminance in all three channels.
    """
    matrix = face_transform(framing, box, landmarks, size).astype(np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # output pixels per image pixel
    if scale < 1:  # shrinking: warpAffine samples points, so low-pass the face's own region first
        sigma = 0.5 / scale
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inverse.T
        pad = 3 * sigma
        h, w = rgb.shape[:2]
        x0, y0 = (max(0, int(np.floor(corners[:, i].min() - pad))) for i in (0, 1))
        x1, y1 = min(w, int(np.ceil(corners[:, 0].max() + pad))), min(h, int(np.ceil(corners[:, 1].max() + pad)))
        if x1 > x0 and y1 > y0:
            rgb = cv2.GaussianBlur(rgb[y0:y1, x0:x1], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
            matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    crop = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if framing.grey:
        crop = np.repeat(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    return crop
