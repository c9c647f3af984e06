"""Turn a finished FER+ fine-tuning run into the built-in model shipped in src/frafer/pretrained/<name>/.

1. fit the softmax temperature on FER+ Valid (never Test) and store it in the run's selected bundle;
2. write the bundle with fp16 weights into the package, and check on Valid that fp16 changes no prediction that
   matters (top-1 within 0.1 point of fp32);
3. evaluate it once on FER+ Test: top-1, macro-F1, per-class recall, confusion matrix, and the expected
   calibration error before and after scaling (with a reliability diagram);
4. measure its faces/s through onnxruntime on one thread, batch 1 and 32;
5. record all of it, the recipe, the command, the commit and the data's terms as the bundle's `card`
   (what `frafer models --verbose` prints and docs/model_card.md quotes).

    python scripts/build_builtin_model.py RUN --data <FERPlus root> [--name ferplus-r18w32-v1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from frafer.artifacts.bundle import find_bundle, load_bundle
from frafer.artifacts.onnx_export import export_onnx
from frafer.eval.calibration import calibration_summary, plot_reliability
from frafer.eval.evaluate import bundle_split, calibrate_bundle, predict_logits
from frafer.eval.reports import classification_report
from frafer.infer.predictor import OnnxBackend
from frafer.pretrained import DEFAULT_MODEL, ROOT, write_builtin

REPO = Path(__file__).resolve().parents[1]
LIMITS = [
    "trained on FER2013 faces: mostly frontal, adult, web images, 48 px grey; profile faces (beyond about 45°), "
    "children, heavy occlusion (hands, masks, sunglasses) and low light were not measured and are expected to fail "
    "more often",
    "contempt and disgust have few training faces (under 1 % each): their recall is low",
    "labels are the majority of 10 crowd votes: an expression the annotators disagreed on has no true answer",
    "faces come through a detector in photos: a poor crop (very small or blurred faces) lowers accuracy; the "
    "framing preset recorded in the bundle matches FER2013's tight crops",
]


def scores(logits: torch.Tensor, labels, classes) -> dict:
    r = classification_report(labels, logits.argmax(1).numpy(), classes)
    return {"top1": r["top1"], "macro_f1": r["macro_f1"], "mean_class_acc": r["mean_class_acc"],
            "count": r["count"], "recall": {c: r["per_class"][c]["recall"] for c in classes},
            "confusion": r["confusion"]}


def onnx_speed(bundle, batch: int, seconds: float = 3.0) -> float:
    path = Path(tempfile.mkdtemp()) / "m.onnx"
    export_onnx(bundle, path)
    run = OnnxBackend(path, threads=1)
    x = np.random.default_rng(0).normal(size=(batch, 3, bundle.input_size, bundle.input_size)).astype(np.float32)
    run(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(x)
        done += batch
    return done / (time.perf_counter() - start)


def training_time(run: Path) -> str:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    hours = (lines[-1]["time"] - lines[0]["time"]) / 3600
    return f"{hours:.2f} h wall on 2 CPU cores (first to last logged step)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the fine-tuning run folder (configs/ferplus/builtin.yaml)")
    ap.add_argument("--data", required=True, help="FERPlus root")
    ap.add_argument("--name", default=DEFAULT_MODEL)
    ap.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    args = ap.parse_args()
    torch.set_num_threads(2)

    selected = find_bundle(args.run)
    calibration = calibrate_bundle(selected, "ferplus", args.data, "val")
    target = ROOT / args.name
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    run_record = json.loads((args.run / "run.json").read_text())
    card = {
        "summary": "expression classifier: ResNet-18 of width 32 trained from random init on FER+ crowd votes",
        "benchmark": "FER+",
        "dataset": "FER+ (FER2013 faces, crowd votes)",
        "data": "FERPlus (FER2013 images with 10 crowd votes each): Train to fit, Valid to choose the epoch and "
                "the temperature, Test once",
        "terms": "FER2013 images: research use only (Kaggle / ICML 2013 challenge); FERPlus labels: MIT licence. "
                 "The weights are learnt from them: use them under the same terms",
        "licence": "research use (FER2013), labels MIT",
        "recipe": "configs/ferplus/builtin.yaml",
        "command": "frafer finetune --config configs/ferplus/builtin.yaml data.root=<FERPlus root>; then "
                   "python scripts/build_builtin_model.py <run> --data <FERPlus root>",
        "trained_at_commit": run_record.get("git_commit", "?")[:7],
        "commit": commit,
        "training_time": training_time(args.run),
        "epoch": load_bundle(selected).info.get("epoch"),
        "limits": LIMITS,
    }
    write_builtin(selected, target, card)

    device = torch.device("cpu")
    full, half = load_bundle(selected), load_bundle(target)
    metrics, cal_test = {}, {}
    for split in ("val", "test"):
        samples, _, _, _ = bundle_split(half, "ferplus", args.data, split)
        logits, labels, _ = predict_logits(half.model, samples, half.transform(), device, 256, 2, split)
        metrics[split] = scores(logits, labels, list(half.classes))
        if split == "val":
            ref, _, _ = predict_logits(full.model, samples, full.transform(), device, 256, 2, split)
            fp32 = scores(ref, labels, list(full.classes))["top1"]
            if abs(fp32 - metrics["val"]["top1"]) > 0.1:
                raise SystemExit(f"fp16 weights move Valid top-1 from {fp32:.2f} to {metrics['val']['top1']:.2f}")
            card["fp16_check"] = f"Valid top-1 {fp32:.2f} % with fp32 weights, {metrics['val']['top1']:.2f} % fp16"
        else:
            summary = calibration_summary(logits.numpy(), labels, half.temperature)
            cal_test = {"ECE at T = 1": f"{summary['ece_before']:.2f} %",
                        f"ECE at T = {half.temperature:.3f}": f"{summary['ece_after']:.2f} %",
                        "NLL": f"{summary['nll_before']:.4f} → {summary['nll_after']:.4f}"}
            plot_reliability(logits.numpy(), labels, half.temperature,
                             args.figures / f"{args.name}_reliability_test.png", f"{args.name} on FER+ Test")
    card["metrics"] = metrics
    card["calibration_test"] = cal_test
    card["speed"] = {f"onnxruntime, 1 thread, batch {b}": f"{onnx_speed(half, b):.0f} faces/s" for b in (1, 32)}
    write_builtin(selected, target, card)
    print(json.dumps({"calibration (val)": calibration, "test": {k: v for k, v in metrics["test"].items()
                                                                 if k != "confusion"}, "card": card}, indent=2))


if __name__ == "__main__":
    main()
