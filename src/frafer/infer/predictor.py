"""`Predictor`: a model bundle + a face detector → for each image, its faces with labels, probabilities, heatmaps.

    predictor = Predictor.from_pretrained()                    # the built-in expression model (`frafer models`)
    predictor = Predictor.from_bundle("runs/ft/model", device="cpu")
    for faces in predictor.predict(["group.jpg", pil_image, bgr_array], colour="RGB"):
        for face in faces:
            face.label, face.confidence, face.probabilities  # probabilities in predictor.classes order

Images may be paths, PIL images or uint8 numpy arrays; `colour` says the channel order of the arrays ("RGB", or
"BGR" for OpenCV frames). Faces of all images in one call are classified in batches of `batch_size`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import resize

from frafer.artifacts.bundle import Bundle, find_bundle, fingerprint, load_bundle
from frafer.data.fer.framing import FRAMINGS
from frafer.errors import FraferError
from frafer.infer.cam import ClassActivationMaps
from frafer.infer.detect import Face, build_detector
from frafer.infer.face_crop import crop_face
from frafer.infer.inputs import DEFAULT_MAX_PIXELS, as_rgb_array, read_image
from frafer.models.region_model import RegionModel

HEATMAP_TRUNKS = ("pretrained", "finetuned")
ONNX_FILE = "model.onnx"  # where a bundle keeps its own export


@dataclass
class FacePrediction:
    index: int  # within its image, best detector score first
    box: tuple[float, float, float, float]  # x1 y1 x2 y2, image pixels
    landmarks: np.ndarray | None  # (5, 2) x y, image pixels (detectors with landmarks only)
    score: float  # the detector's
    label: str
    confidence: float  # probability of `label`
    probabilities: np.ndarray  # (num_classes,), in Predictor.classes order
    crop: np.ndarray | None = field(default=None, repr=False)  # (S, S, 3) uint8: what the classifier saw
    heatmaps: np.ndarray | None = field(default=None, repr=False)  # (N, h, w), each pixel sums to 1 over N
    cam: np.ndarray | None = field(default=None, repr=False)  # (h, w) Grad-CAM of `label`, in [0, 1]


class TorchBackend:
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device

    @torch.no_grad()
    def __call__(self, faces: np.ndarray) -> np.ndarray:  # (B, 3, S, S) float32 → (B, classes) logits
        return self.model(torch.from_numpy(faces).to(self.device)).float().cpu().numpy()


class OnnxBackend:
    name = "onnx"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        providers = providers or available
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise FraferError(f"onnxruntime has no execution provider {unknown[0]} here (available: "
                              f"{', '.join(available)})")
        path = Path(path)
        if not path.is_file():
            raise FraferError(f"ONNX file {path} does not exist (frafer export BUNDLE --onnx PATH writes one)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = onnxruntime's own choice
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for bad files; none is a bug of ours
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise FraferError(f"onnxruntime cannot load {path} ({first[:300]})") from None
        names = ([i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        if "faces" not in names[0] or "logits" not in names[1]:
            raise FraferError(f"{path} is not a frafer export: it needs an input 'faces' and an output 'logits', "
                              f"it has inputs {names[0]} and outputs {names[1]}")
        self.providers, self.path = self.session.get_providers(), path

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"faces": faces})[0]


class Predictor:
    def __init__(self, bundle: Bundle, detector: str = "mtcnn", backend: str = "torch", onnx_path=None,
                 providers: list[str] | None = None, heatmaps: bool = False, heatmap_trunk: str = "pretrained",
                 batch_size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS, keep_crops: bool = False,
                 device: str | torch.device = "cpu", framing: str = "", cam_layer: str | None = None,
                 onnx_threads: int = 0, **detector_options) -> None:
        self.bundle = bundle
        check_predictor_options(batch_size, max_pixels, device)
        if framing and framing not in FRAMINGS:
            raise FraferError(f"unknown framing '{framing}' (known: {', '.join(FRAMINGS)})")
        # the bundle's record of how its training faces were cut, unless told otherwise (a bundle saved before a
        # preset was re-measured keeps the old one)
        self.framing = FRAMINGS[framing] if framing else bundle.framing
        self.device = torch.device(device)
        self.classes = bundle.classes
        self.detector_name = detector
        self.detect = build_detector(detector, **detector_options)
        self.batch_size, self.max_pixels, self.keep_crops = batch_size, max_pixels, keep_crops
        self.mean = np.asarray(bundle.mean, np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(bundle.std, np.float32).reshape(1, 3, 1, 1)
        if backend == "torch":
            self.backend = TorchBackend(bundle.model.to(self.device).eval(), self.device)
        elif backend == "onnx":
            if onnx_path is None:
                raise FraferError("the onnx backend needs the exported file (frafer export BUNDLE --onnx PATH)")
            self.backend = OnnxBackend(onnx_path, providers, onnx_threads)
        else:
            raise FraferError(f"unknown backend '{backend}' (known: torch, onnx)")
        # --heatmaps: Grad-CAM of the classifier for every bundle, and FRA's region maps where the bundle has them
        self.regions = self._region_model(heatmap_trunk) if heatmaps and bundle.regions is not None else None
        self.heatmap_trunk = heatmap_trunk if self.regions is not None else None
        self.cam = ClassActivationMaps(bundle.model, bundle.input_size, cam_layer) if heatmaps else None
        self._explainers = None  # (Grad-CAM, region model) made on the first explain()

    @classmethod
    def from_pretrained(cls, name: str = "", device: str | torch.device = "cpu", **options) -> Predictor:
        """A built-in model shipped inside the package (`frafer models` lists them; empty = the default)."""
        from frafer.pretrained import load_builtin, onnx_path

        check_device(device)
        bundle = load_builtin(name, device)
        if options.get("backend") == "onnx" and options.get("onnx_path") is None:
            options["onnx_path"] = _exported(bundle, onnx_path(name))
        return cls(bundle, device=device, **options)

    @classmethod
    def from_bundle(cls, path: str | Path, device: str | torch.device = "cpu", **options) -> Predictor:
        """Load the bundle at `path`. With backend="onnx" and no onnx_path, the bundle's own `model.onnx` is used,
        exported (and checked against PyTorch) on first use."""
        check_device(device)
        folder = find_bundle(path)
        bundle = load_bundle(folder, device)
        if options.get("backend") == "onnx" and options.get("onnx_path") is None:
            options["onnx_path"] = _exported(bundle, folder / ONNX_FILE)
        return cls(bundle, device=device, **options)

    def identity(self) -> dict:
        """Which model this is: where it was loaded from and a fingerprint of what shapes its predictions."""
        source = self.bundle.source
        return {"model": source or "<in memory>", "fingerprint": fingerprint(source) if source else "",
                "classes": list(self.classes), "backend": self.backend.name}

    def _region_model(self, trunk: str) -> RegionModel:
        regions = self.bundle.regions
        if trunk not in HEATMAP_TRUNKS:
            raise FraferError(f"heatmap trunk must be one of {', '.join(HEATMAP_TRUNKS)}, got {trunk!r}")
        if trunk == "finetuned":  # the classifier's own trunk under the pre-trained projector and masks
            prototypes = None if regions.per_face_masks else regions.prototypes
            regions = RegionModel(self.bundle.model.trunk, regions.dense_projector, regions.decoder, prototypes,
                                  regions.temperature)
        return regions.to(self.device).eval()

    # ------------------------------------------------------------------------------------------------ faces

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 → (B, 3, S, S) float32, normalised as in training."""
        x = crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return np.ascontiguousarray((x - self.mean) / self.std)

    def classify_crops(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, S, S, 3) uint8 face crops → probabilities (B, classes) and heatmaps (B, N, h, w) or None."""
        probs, maps = [], []
        for start in range(0, len(crops), self.batch_size):
            x = self.normalise(crops[start:start + self.batch_size])
            logits = self.backend(x) / self.bundle.temperature  # calibrated (eval/calibration.py)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs.append(e / e.sum(axis=1, keepdims=True))
            if self.regions is not None:
                with torch.no_grad():
                    maps.append(self.regions(torch.from_numpy(x).to(self.device)).float().cpu().numpy())
        n = len(self.classes)
        return (np.concatenate(probs) if probs else np.zeros((0, n), np.float32),
                np.concatenate(maps) if maps else None)

    def explain(self, faces: list[FacePrediction]) -> list[FacePrediction]:
        """Fill in each face's Grad-CAM (and FRA region maps when the bundle has them) after the fact, for faces of
        a predictor made without heatmaps=True but with keep_crops=True: the service explains only on request."""
        if not faces:
            return faces
        if any(f.crop is None for f in faces):
            raise FraferError("explain needs the faces' crops: make the predictor with keep_crops=True")
        if self._explainers is None:
            regions = self._region_model("pretrained") if self.bundle.regions is not None else None
            self._explainers = (self.cam or ClassActivationMaps(self.bundle.model, self.bundle.input_size),
                                self.regions or regions)
        cam, regions = self._explainers
        crops = np.stack([f.crop for f in faces])
        targets = np.array([self.classes.index(f.label) for f in faces])
        for start in range(0, len(faces), self.batch_size):
            x = torch.from_numpy(self.normalise(crops[start:start + self.batch_size])).to(self.device)
            cams = cam(x, targets[start:start + self.batch_size])
            maps = None
            if regions is not None:
                with torch.no_grad():
                    maps = regions(x).float().cpu().numpy()
            for k, face in enumerate(faces[start:start + self.batch_size]):
                face.cam = cams[k]
                face.heatmaps = None if maps is None else maps[k]
        return faces

    @property
    def cam_layer(self) -> str:
        """The trunk stage of the Grad-CAM maps this predictor has drawn ('' before any)."""
        cam = self.cam or (self._explainers[0] if self._explainers else None)
        return cam.layer if cam is not None else ""

    def class_maps(self, crops: np.ndarray, targets) -> np.ndarray:
        """(B, S, S, 3) uint8 crops and (B,) class indices → (B, h, w) Grad-CAM maps in [0, 1]."""
        if self.cam is None:
            raise FraferError("this predictor was made without heatmaps=True, so it computes no class maps")
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(self.normalise(crops[start:start + self.batch_size])).to(self.device)
            out.append(self.cam(x, targets[start:start + self.batch_size]))
        return np.concatenate(out) if out else np.zeros((0, 1, 1), np.float32)

    def crop(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        size = self.bundle.input_size
        if self.detector_name == "none":  # already a face crop, as in the dataset: resized exactly as in training
            if self.framing.grey:
                rgb = np.asarray(Image.fromarray(rgb).convert("L").convert("RGB"))
            pixels = torch.from_numpy(np.require(rgb, requirements=["C", "W"]))  # PIL's arrays are read-only
            resized = resize(pixels.permute(2, 0, 1), [size, size], antialias=True)
            return resized.permute(1, 2, 0).numpy()
        return crop_face(rgb, self.framing, face.box, face.landmarks, size)

    # ------------------------------------------------------------------------------------------------ images

    def load(self, image, colour: str = "RGB") -> np.ndarray:
        if isinstance(image, (str, Path)):
            return read_image(image, self.max_pixels)
        return as_rgb_array(image, colour)

    def predict(self, images, colour: str = "RGB") -> list[list[FacePrediction]]:
        """One list of faces per image (empty where none was found). Unreadable paths raise `BadInput`."""
        single = not isinstance(images, (list, tuple))
        rgbs = [self.load(im, colour) for im in ([images] if single else images)]
        found = [self.detect(rgb) for rgb in rgbs]
        return self.predict_detected(rgbs, found)

    def predict_detected(self, rgbs: list[np.ndarray], found: list[list[Face]]) -> list[list[FacePrediction]]:
        crops = [self.crop(rgb, f) for rgb, faces in zip(rgbs, found, strict=True) for f in faces]
        size = self.bundle.input_size
        stacked = np.stack(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
        probs, maps = self.classify_crops(stacked)
        cams = self.class_maps(stacked, probs.argmax(axis=1)) if self.cam is not None else None
        results, k = [], 0
        for faces in found:
            row = []
            for i, face in enumerate(faces):
                p = probs[k]
                top = int(p.argmax())
                row.append(FacePrediction(
                    i, face.box, face.landmarks, face.score, self.classes[top], float(p[top]), p,
                    stacked[k] if self.keep_crops or self.cam is not None else None,
                    None if maps is None else maps[k], None if cams is None else cams[k]))
                k += 1
            results.append(row)
        return results


def _exported(bundle: Bundle, path: Path) -> Path:
    """`path`, exported from the bundle (and checked against PyTorch) if it does not exist yet."""
    if not path.is_file():
        from frafer.artifacts.onnx_export import export_onnx

        path.parent.mkdir(parents=True, exist_ok=True)
        report = export_onnx(bundle, path)
        print(f"exported {report['path']} (max |onnx - torch| {report['max_abs_diff']['logits']:.1e})")
    return path


def check_predictor_options(batch_size: int, max_pixels: int, device) -> None:
    """One named error for each option value that cannot work (no traceback later)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FraferError(f"--batch-size must be 1 or more, got {batch_size!r}")
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise FraferError(f"--max-pixels must be a positive number of pixels, got {max_pixels!r}")
    check_device(device)


def check_device(device) -> None:
    """cpu, cuda or cuda:N, and CUDA present when asked for; else one named error."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise FraferError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise FraferError(f"--device must be cpu, cuda or cuda:N, got {str(device)!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FraferError(f"--device {device}: this machine has no CUDA device (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FraferError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
