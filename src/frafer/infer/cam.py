"""Where the classifier looked: Grad-CAM of a bundle's classifier, through Captum's LayerGradCam.

Works for every bundle, FRA-pre-trained or not. The map of a face is the ReLU of the class-score gradients'
channel means times the activations of one trunk stage, normalised to [0, 1] per face. The classifier runs in eval
mode (batch-norm from running statistics), so a face's map does not depend on the other faces of its batch.

Which stage: layer4 is the classic choice, but at the 48 px of FER-style bundles it is 3×3 (one cell per facial
third), so the default is the deepest stage with at least 6 cells a side.
"""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import LayerGradCam

from frafer.errors import FraferError
from frafer.models.classifier import FERClassifier

CAM_LAYERS = ("layer2", "layer3", "layer4")
MIN_CAM_SIDE = 6


def default_cam_layer(model: FERClassifier, input_size: int) -> str:
    """The deepest trunk stage whose map has at least MIN_CAM_SIDE cells a side at `input_size`."""
    with torch.no_grad():
        x = torch.zeros(1, 3, input_size, input_size, device=next(model.parameters()).device)
        t = model.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
        sides = {}
        for name in ("layer1", *CAM_LAYERS):
            x = getattr(t, name)(x)
            sides[name] = x.shape[-1]
    for name in reversed(CAM_LAYERS):
        if sides[name] >= MIN_CAM_SIDE:
            return name
    return "layer2"


class ClassActivationMaps:
    """Grad-CAM of `model` at trunk stage `layer` (None = default_cam_layer)."""

    def __init__(self, model: FERClassifier, input_size: int, layer: str | None = None) -> None:
        layer = layer or default_cam_layer(model, input_size)
        if layer not in CAM_LAYERS:
            raise FraferError(f"Grad-CAM layer must be one of {', '.join(CAM_LAYERS)}, got {layer!r}")
        self.model, self.layer = model.eval(), layer
        self.gradcam = LayerGradCam(model, getattr(model.trunk, layer))

    def __call__(self, faces: torch.Tensor, targets) -> np.ndarray:
        """(B, 3, S, S) normalised faces, (B,) class indices → (B, h, w) float32 maps in [0, 1]."""
        targets = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=faces.device)
        with torch.enable_grad():
            maps = self.gradcam.attribute(faces.float().requires_grad_(), target=targets, relu_attributions=True)
        maps = maps.detach().float()[:, 0]  # (B, h, w)
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
        return (maps / peak).cpu().numpy().astype(np.float32)
