"""Do FRA's region maps form, and when? Every kept checkpoint of one or more pre-training runs, on held-out real
faces: the study behind docs/results.md's "Where FRA's regions form".

For each run it reads two things:
- from metrics.jsonl, the training curves: hm_maxprob (mean largest region probability on the training batches;
  1/N for flat maps), hm_entropy and the relation loss rel_ce (ln N while the maps are flat);
- for every checkpoint under checkpoints/, the region model's maps on the same held-out faces (FER+ Valid by
  default, never trained on): sharpness (the same largest-probability figure), consistency (per region, the share
  of faces on which it lands on its most common facial part; parts from MTCNN's five landmarks, as
  benchmarks/region_consistency.py does) and its control (the same picks with each face's region labels shuffled).

"Formed" is decided by measurement, not by eye: sharpness at least 1.25× the flat 1/N (infer/draw.py's
FORMED_SHARPNESS, the bar predict labels its panels by) and consistency at least 0.15 above its shuffled control.

    python benchmarks/region_formation.py RUN [RUN ...] --data FERPLUS --faces 200 --out figures/regions

writes regions.jsonl (one line per run and checkpoint), curves.png (training and held-out curves against steps),
panels.png (each run's last checkpoint on the same first --panels faces, argmax regions, one row per run: the
side-by-side view the report chose τ by; it shows dataset faces, so keep it out of the repository), layout.png
(each run's last checkpoint again, one row per run: every region's map averaged over all the held-out faces,
titled with the part it lands on most and on what share of them; no face in it, so docs may show it) and prints a
table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np
import torch
import yaml
from framing import crop_landmarks  # benchmarks/framing.py
from region_consistency import landmark_parts, score_regions  # benchmarks/region_consistency.py

from frafer.artifacts.regions import region_model_from_pretraining
from frafer.data.fer.dataset import load_sample_image
from frafer.data.pipelines.transforms import VGGFACE2_MEAN, VGGFACE2_STD, build_eval_transform
from frafer.data.readers.fer_formats import read_fer_dataset
from frafer.experiments.heatmap_panels import panel_row, run_heatmaps
from frafer.infer.detect import mtcnn_detector
from frafer.infer.draw import FORMED_SHARPNESS, panel_grid, upsample_maps

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CONSISTENCY_MARGIN = 0.15  # consistency above the shuffled control that counts as regions on facial parts


def held_out_faces(fmt: str, root: str, split: str, count: int):
    """The first `count` faces of the split that MTCNN finds: (PIL image, landmarks in unit crop coordinates)."""
    detect, faces = mtcnn_detector(), []
    for sample in read_fer_dataset(fmt, root).split(split):
        if len(faces) == count:
            break
        image = load_sample_image(sample).convert("RGB")
        rgb = np.asarray(image)
        marks = crop_landmarks(rgb, detect, 4.0, 0.5)
        if marks is not None:
            faces.append((image, marks / np.array(rgb.shape[1::-1], np.float64)))
    if not faces:
        raise SystemExit(f"MTCNN found no face in the {split} split of {root}")
    return faces


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    found = sorted(run.glob("checkpoints/step_*/weights.safetensors"))
    return [(int(p.parent.name.removeprefix("step_")), p) for p in found]


@torch.no_grad()
def measure_checkpoint(weights: Path, cfg: dict, faces) -> tuple[dict, np.ndarray]:
    """Sharpness, consistency and its control of one checkpoint's region maps on the faces, and those maps' mean
    over the faces (N, h, w): where each region sits on the average face."""
    size, aug = int(cfg["data"]["image_size"]), cfg.get("aug", {})
    model, _ = region_model_from_pretraining(weights)
    transform = build_eval_transform(size, aug.get("mean", VGGFACE2_MEAN), aug.get("std", VGGFACE2_STD))
    maps = model(torch.stack([transform(image) for image, _ in faces])).float().numpy()  # (F, N, h, w)
    pairs = [(upsample_maps(m, size), landmark_parts(marks * size, size))
             for m, (_, marks) in zip(maps, faces, strict=True)]
    return score_regions(pairs), maps.mean(axis=0)


def training_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {key: [(r["step"], r[key]) for r in rows if r.get("kind") == "train" and key in r]
            for key in ("hm_maxprob", "rel_ce", "hm_entropy")}


def formed(r: dict) -> bool:
    return r["sharpness"] >= FORMED_SHARPNESS * r["uniform"] and r["consistency"] >= r["control"] + CONSISTENCY_MARGIN


def plot(results: dict[str, dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, res in results.items():
        line, = axes[0].plot(*zip(*res["curves"]["hm_maxprob"], strict=True), label=f"{name} (training batches)")
        steps = [r["step"] for r in res["held_out"]]
        axes[0].plot(steps, [r["sharpness"] for r in res["held_out"]], "o--", color=line.get_color(),
                     label=f"{name} (held-out faces)")
        axes[1].plot(steps, [r["consistency"] for r in res["held_out"]], "o-", color=line.get_color(), label=name)
        axes[1].plot(steps, [r["control"] for r in res["held_out"]], ":", color=line.get_color())
        if res["curves"]["rel_ce"]:
            axes[2].plot(*zip(*res["curves"]["rel_ce"], strict=True), color=line.get_color(), label=name)
    uniform = next(iter(results.values()))["held_out"][0]["uniform"] if results else 0.125
    axes[0].axhline(uniform, color="grey", lw=0.8)
    axes[0].axhline(FORMED_SHARPNESS * uniform, color="grey", lw=0.8, ls="--")
    axes[0].set(title="largest region probability (grey: flat 1/N, dashed: 'formed')", xlabel="step")
    axes[1].set(title="consistency on held-out faces (dotted: shuffled regions)", xlabel="step", ylim=(0, 1))
    axes[2].set(title="relation loss rel_ce (flat maps: ln N)", xlabel="step")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_panels(results: dict[str, dict], runs: list[Path], faces, path: Path) -> None:
    """One row per run: its last checkpoint's argmax regions on the same faces, titled with its held-out scores."""
    rows = []
    for run in runs:
        last = results[run.name]["held_out"][-1] if results[run.name]["held_out"] else None
        scores = (f"step {last['step']}  sharpness {last['sharpness']:.3f}  consistency {last['consistency']:.2f}"
                  f" / control {last['control']:.2f}" if last else "no checkpoint")
        crops, maps = run_heatmaps(run, results[run.name]["config"], [image for image, _ in faces])
        rows.append(panel_row(f"{run.name}   {scores}", crops, maps))
    panel_grid(rows).save(path)


def draw_layout(results: dict[str, dict], path: Path) -> None:
    """One row per run, one tile per region: its last checkpoint's map averaged over the held-out faces."""
    names = [name for name, res in results.items() if res["held_out"]]
    if not names:
        return
    regions = len(results[names[0]]["mean_maps"])
    top = max(float(results[name]["mean_maps"].max()) for name in names)  # one colour scale for every run
    fig, axes = plt.subplots(len(names), regions, figsize=(1.3 * regions + 1.6, 1.45 * len(names)), squeeze=False)
    for row, name in zip(axes, names, strict=True):
        last = results[name]["held_out"][-1]
        for n, (ax, mean_map) in enumerate(zip(row, results[name]["mean_maps"], strict=True)):
            ax.imshow(mean_map, cmap="magma", vmin=0, vmax=top, interpolation="bilinear")
            part, share = last["per_region"][n]
            ax.set_title(f"{n}: {part} {share:.0%}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(f"{name}\nstep {last['step']}", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"each region's map averaged over the held-out faces (black 0, brightest {top:.2f}; title: the "
                 "part it lands on most, on what share of the faces)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="FRA pre-training run folders")
    p.add_argument("--data", required=True, help="the labelled dataset root the held-out faces come from")
    p.add_argument("--format", default="ferplus")
    p.add_argument("--split", default="val")
    p.add_argument("--faces", type=int, default=200)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--panels", type=int, default=8, help="faces per row of panels.png (0: no panels)")
    args = p.parse_args()
    torch.set_num_threads(1)
    faces = held_out_faces(args.format, args.data, args.split, args.faces)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    with (args.out / "regions.jsonl").open("w") as log:
        for run in args.runs:
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            held_out, mean_maps = [], None
            for step, weights in checkpoints(run):
                scores, mean_maps = measure_checkpoint(weights, cfg, faces)
                r = {"run": run.name, "step": step, **scores}
                r["formed"] = formed(r)
                log.write(json.dumps(r) + "\n")
                held_out.append(r)
                regions = ", ".join(f"{part} {share:.2f}" for part, share in r["per_region"])
                print(f"{run.name:>16} step {step:>6}: sharpness {r['sharpness']:.3f} (flat {r['uniform']:.3f}), "
                      f"consistency {r['consistency']:.2f} (shuffled {r['control']:.2f}), concentration "
                      f"{r['concentration']:.2f}, formed {r['formed']}; {regions}", flush=True)
            results[run.name] = {"held_out": held_out, "curves": training_curves(run), "config": cfg,
                                 "mean_maps": mean_maps}
    plot(results, args.out / "curves.png")
    draw_layout(results, args.out / "layout.png")
    if args.panels:
        draw_panels(results, args.runs, faces[: args.panels], args.out / "panels.png")
    panels = ", panels.png" * bool(args.panels)
    print(f"{len(faces)} held-out faces; wrote regions.jsonl, curves.png, layout.png{panels} under {args.out}")


if __name__ == "__main__":
    main()
