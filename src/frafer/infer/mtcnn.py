"""MTCNN (Zhang et al., IEEE SPL 2016) in PyTorch: a face detector with five landmarks, no download at run time.

The three cascaded networks are written here; their trained weights come from the `mtcnn` wheel on PyPI (MIT
licence, the weights ship inside it as Keras-layout arrays), which frafer depends on for those files only, not for
its TensorFlow code. `load_mtcnn_weights` converts the arrays once per process.

    P-Net: 12×12 fully convolutional proposals over an image pyramid
    R-Net: 24×24 crops → face score and box refinement
    O-Net: 48×48 crops → face score, box refinement and 5 landmarks
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, roi_align

from frafer.errors import FraferError


def _max_pool_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Keras's 'same' max pooling: output ceil(n / stride), the padding (−inf) split with the extra on the far side."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad wants the last dim first
        out = math.ceil(n / stride)
        total = max((out - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel, stride)


def _flatten_wh(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, W·H·C) in the order the released dense layers were trained on (width, height, channel)."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.box, self.score = nn.Conv2d(32, 4, 1), nn.Conv2d(32, 2, 1)

    def forward(self, x):  # (B, 3, H, W) → (B, 4, h, w) box offsets, (B, h, w) face probability
        x = _max_pool_same(self.prelu1(self.conv1(x)), 2, 2)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.box(x), self.score(x).softmax(dim=1)[:, 1]


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.fc, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.box, self.score = nn.Linear(128, 4), nn.Linear(128, 2)

    def forward(self, x):  # (B, 3, 24, 24) → (B, 4), (B,)
        x = _max_pool_same(self.prelu1(self.conv1(x)), 3, 2)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2)
        x = self.prelu4(self.fc(_flatten_wh(self.prelu3(self.conv3(x)))))
        return self.box(x), self.score(x).softmax(dim=1)[:, 1]


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.fc, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.box, self.landmarks, self.score = nn.Linear(256, 4), nn.Linear(256, 10), nn.Linear(256, 2)

    def forward(self, x):  # (B, 3, 48, 48) → (B, 4), (B, 10) [x1..x5, y1..y5], (B,)
        x = _max_pool_same(self.prelu1(self.conv1(x)), 3, 2)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2)
        x = _max_pool_same(self.prelu3(self.conv3(x)), 2, 2)
        x = self.prelu5(self.fc(_flatten_wh(self.prelu4(self.conv4(x)))))
        return self.box(x), self.landmarks(x), self.score(x).softmax(dim=1)[:, 1]


def _assign(net: nn.Module, arrays: list[np.ndarray]) -> None:
    """Keras arrays, in layer order (conv HWIO + bias, PReLU alphas, dense (in, out) + bias) → the torch modules."""
    params = [p for m in net.children() for p in m.parameters(recurse=False)]
    if len(params) != len(arrays):
        raise FraferError(f"MTCNN weights for {type(net).__name__}: {len(arrays)} arrays for {len(params)} parameters")
    with torch.no_grad():
        for p, a in zip(params, arrays, strict=True):
            t = torch.from_numpy(np.asarray(a, dtype=np.float32))
            if t.dim() == 4:
                t = t.permute(3, 2, 0, 1)  # HWIO → OIHW
            elif t.dim() == 2:
                t = t.t()  # (in, out) → (out, in)
            t = t.reshape(p.shape)  # PReLU (1, 1, C) → (C,)
            p.copy_(t)


@functools.lru_cache(maxsize=1)
def load_mtcnn_weights() -> tuple[PNet, RNet, ONet]:
    """The three networks with the weights of the installed `mtcnn` wheel, in eval mode (cached per process)."""
    import joblib  # the wheel's own storage format: lz4-compressed joblib arrays

    spec = importlib.util.find_spec("mtcnn")  # located, not imported: its __init__ wants TensorFlow
    if spec is None or not spec.submodule_search_locations:
        raise FraferError("the MTCNN detector reads its weights from the 'mtcnn' package: pip install 'mtcnn==1.0.0'")
    folder = Path(spec.submodule_search_locations[0]) / "assets" / "weights"
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet", "rnet", "onet"), strict=True):
        path = folder / f"{name}.lz4"
        if not path.is_file():
            raise FraferError(f"MTCNN weights missing: {path} (reinstall 'mtcnn==1.0.0')")
        _assign(net, joblib.load(path))
        net.eval().requires_grad_(False)
    return nets


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """(K, 4) x1 y1 x2 y2 → the square of the longer side around each centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    side = (boxes[:, 2:] - boxes[:, :2]).max(dim=1, keepdim=True).values
    return torch.cat([centre - side / 2, centre + side / 2], dim=1)


def _refine(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply regressed offsets, each a fraction of the box's width or height."""
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * wh


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """NMS where overlap is intersection over the smaller box (drops a box nested in a better one)."""
    order = scores.argsort(descending=True)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    keep = []
    while order.numel():
        i = order[0]
        keep.append(i)
        rest = order[1:]
        lt = torch.maximum(boxes[i, :2], boxes[rest, :2])
        rb = torch.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=1)
        overlap = inter / torch.minimum(area[i], area[rest]).clamp(min=1e-9)
        order = rest[overlap <= threshold]
    return torch.stack(keep) if keep else torch.zeros(0, dtype=torch.long)


def _crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """(1, 3, H, W) normalised image, (K, 4) boxes → (K, 3, size, size) bilinear crops (zero outside the image)."""
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], dim=1)
    return roi_align(image, rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)


@torch.no_grad()
def mtcnn_detect(rgb: np.ndarray, min_face: int = 20, thresholds=(0.6, 0.7, 0.8), scale_factor: float = 0.709):
    """One RGB uint8 image (H, W, 3) → boxes (K, 4) x1 y1 x2 y2, scores (K,), landmarks (K, 5, 2), best first.

    Landmarks: left eye, right eye (as seen in the image), nose, left and right mouth corners.
    """
    pnet, rnet, onet = load_mtcnn_weights()
    h, w = rgb.shape[:2]
    image = (torch.tensor(rgb).permute(2, 0, 1).float().unsqueeze(0) - 127.5) / 128  # a copy: inputs may be read-only
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    # Stage 1: P-Net over the pyramid; each output cell is a 12×12 window at stride 2 of the scaled image.
    proposals = []
    scale = 12 / min_face
    while min(h, w) * scale >= 12:
        sh, sw = math.ceil(h * scale), math.ceil(w * scale)
        scaled = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
        x = (torch.from_numpy(scaled).permute(2, 0, 1).float().unsqueeze(0) - 127.5) / 128
        offsets, prob = pnet(x)
        ys, xs = torch.nonzero(prob[0] > thresholds[0], as_tuple=True)
        if len(ys):
            cells = torch.stack([xs * 2, ys * 2, xs * 2 + 12, ys * 2 + 12], dim=1).float()
            boxes = _refine(cells, offsets[0, :, ys, xs].t()) / scale
            scores = prob[0, ys, xs]
            keep = nms(boxes, scores, 0.5)
            proposals.append((boxes[keep], scores[keep]))
        scale *= scale_factor
    if not proposals:
        return empty
    boxes, scores = (torch.cat(t) for t in zip(*proposals, strict=True))
    keep = nms(boxes, scores, 0.7)
    boxes = _square(boxes[keep])

    # Stage 2: R-Net refines and rejects.
    offsets, scores = rnet(_crops(image, boxes, 24))
    mask = scores > thresholds[1]
    if not mask.any():
        return empty
    boxes, scores = _refine(boxes[mask], offsets[mask]), scores[mask]
    keep = nms(boxes, scores, 0.7)
    boxes = _square(boxes[keep])

    # Stage 3: O-Net refines, scores and places the landmarks (relative to the box it was given).
    offsets, marks, scores = onet(_crops(image, boxes, 48))
    mask = scores > thresholds[2]
    if not mask.any():
        return empty
    boxes, offsets, marks, scores = boxes[mask], offsets[mask], marks[mask], scores[mask]
    wh = boxes[:, 2:] - boxes[:, :2]
    landmarks = torch.stack([boxes[:, :1] + marks[:, :5] * wh[:, :1], boxes[:, 1:2] + marks[:, 5:] * wh[:, 1:]], dim=2)
    boxes = _refine(boxes, offsets)
    keep = _nms_min(boxes, scores, 0.7)
    return boxes[keep].numpy(), scores[keep].numpy(), landmarks[keep].numpy()
