"""A bundle's classifier (optionally with its region model) as an ONNX file, checked against PyTorch on real inputs.

    input   "faces"     (B, 3, S, S) float32, normalised with the bundle's mean / std; B is dynamic
    output  "logits"    (B, num_classes)
            "heatmaps"  (B, N, h, w), only when exported with the region model

The file's metadata repeats the bundle's classes, input size, normalisation and framing, so a deployment needs
nothing else. `quantize_int8` turns an export into an int8 one (onnxruntime's static QDQ quantisation, calibrated on
real faces), which runs several times faster on CPUs with VNNI / AMX; it is checked by how often its top-1 agrees
with PyTorch's, since int8 logits cannot match to 1e-4. Export uses PyTorch's TorchScript-based exporter (no extra
dependency); the check runs the file in onnxruntime and reports the largest absolute difference from PyTorch.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from frafer.errors import FraferError

ONNX_OPSET = 17


class _Exported(nn.Module):
    def __init__(self, classifier: nn.Module, regions: nn.Module | None) -> None:
        super().__init__()
        self.classifier, self.regions = classifier, regions

    def forward(self, faces: torch.Tensor):
        logits = self.classifier(faces)
        return logits if self.regions is None else (logits, self.regions(faces))


def export_onnx(bundle, out: str | Path, with_regions: bool = False, check_inputs: torch.Tensor | None = None,
                tolerance: float = 1e-4) -> dict:
    """Write `out` and check it; returns {"path", "max_abs_diff": {output: value}, "outputs"}.

    `check_inputs` are normalised faces (B, 3, S, S) to compare on (real faces when the caller has them; otherwise
    a batch drawn from the bundle's own normalisation statistics). A difference above `tolerance` raises.
    """
    import onnx

    if with_regions and bundle.regions is None:
        raise FraferError("this bundle holds no region model (its trunk was not FRA-pre-trained, or it was made "
                          "with model.keep_regions=false): export without --with-regions")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _Exported(bundle.model, bundle.regions if with_regions else None).cpu().eval()
    size = bundle.input_size
    example = torch.zeros(2, 3, size, size)
    outputs = ["logits", "heatmaps"] if with_regions else ["logits"]
    dynamic = {"faces": {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    tmp = out.with_name(out.name + ".partial")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: torch is pinned
        torch.onnx.export(model, (example,), str(tmp), input_names=["faces"], output_names=outputs,
                          dynamic_axes=dynamic, opset_version=ONNX_OPSET, dynamo=False)
    proto = onnx.load(str(tmp))
    meta = {"classes": json.dumps(list(bundle.classes)), "input_size": str(size), "mean": json.dumps(bundle.mean),
            "std": json.dumps(bundle.std), "framing": json.dumps(bundle.framing.to_dict()), "producer": "frafer"}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp))
    tmp.replace(out)

    checked_on = "faces"
    if check_inputs is None:  # no real faces at hand: inputs drawn like normalised images
        generator = torch.Generator().manual_seed(0)
        check_inputs = torch.randn(4, 3, size, size, generator=generator)
        checked_on = "random inputs (no faces found: pass --check-images)"
    diffs = compare_with_torch(model, out, check_inputs, outputs)
    worst = max(diffs.values())
    if worst > tolerance:
        raise FraferError(f"{out}: onnxruntime differs from PyTorch by {worst:.2e} (> {tolerance:g}) on "
                          f"{len(check_inputs)} faces; the export is not trustworthy")
    return {"path": str(out), "max_abs_diff": diffs, "outputs": outputs,
            "checked_on": f"{len(check_inputs)} {checked_on}"}


def compare_with_torch(model: nn.Module, path: Path, faces: torch.Tensor, outputs: list[str]) -> dict[str, float]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(outputs, {"faces": faces.numpy().astype(np.float32)})
    with torch.no_grad():
        want = model(faces)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    return {name: float(np.abs(g - w.numpy()).max()) for name, g, w in zip(outputs, got, want, strict=True)}


def faces_for_check(bundle, folder: str | Path | None = None, count: int = 32) -> torch.Tensor | None:
    """Up to `count` real face crops, normalised as the bundle expects: from `folder`, else from the folder the
    bundle was trained on when it is still there; None when neither has images (the caller falls back to noise)."""
    from frafer.data.readers.images import first_images

    candidates = [folder] if folder else [bundle.info.get("data", {}).get("root")]
    transform = bundle.transform()
    for root in candidates:
        if not root or not Path(root).is_dir():
            if folder:
                raise FraferError(f"--check-images {folder}: no such folder")
            continue
        images = first_images(root, count)
        if bundle.framing.grey:
            images = [image.convert("L").convert("RGB") for image in images]
        faces = [transform(image) for image in images]
        if faces:
            return torch.stack(faces)
        if folder:
            raise FraferError(f"--check-images {folder}: no readable images there")
    return None


def quantize_int8(exported: str | Path, out: str | Path, faces: torch.Tensor, min_agreement: float = 0.97) -> dict:
    """Statically quantise an fp32 export to int8 (weights per channel, activations calibrated on `faces`, the
    normalised faces (B, 3, S, S) it will meet); refuse the result if its top-1 agrees with the fp32 file's on fewer
    than `min_agreement` of those faces. Returns {"path", "agreement", "calibrated_on"}."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Faces(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"faces": faces[i:i + 16].numpy()} for i in range(0, len(faces), 16)])

        def get_next(self):
            return next(self.batches, None)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prepared = out.with_name(out.name + ".prepared")
    tmp = out.with_name(out.name + ".partial")
    try:
        quant_pre_process(str(exported), str(prepared))
        quantize_static(str(prepared), str(tmp), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)
    x = faces.numpy().astype(np.float32)
    want = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(["logits"], {"faces": x})[0]
    got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(["logits"], {"faces": x})[0]
    agreement = float((want.argmax(1) == got.argmax(1)).mean())
    if agreement < min_agreement:
        tmp.unlink()
        raise FraferError(f"int8 quantisation changes the top-1 class of {100 * (1 - agreement):.1f} % of "
                          f"{len(x)} faces (allowed: {100 * (1 - min_agreement):.1f} %); keep the fp32 export")
    tmp.replace(out)
    return {"path": str(out), "agreement": agreement, "calibrated_on": len(x)}
