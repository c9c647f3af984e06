"""`make demo`: the whole method on built-in synthetic faces, from pre-training to expression recognition.

1. write synthetic faces: unlabelled ones for pre-training; labelled train / val / test splits of identities the
   pre-training never saw (so the numbers measure how well features transfer to new people);
2. pre-train FRA, BYOL and MoCo v2 at the same budget (the kNN monitor runs on the labelled splits, before and
   after);
3. linear probe and fine-tune from random init and from each pre-trained trunk at equal budgets;
4. print one table (top-1 and macro-F1 on the test identities) and write it to summary.json / summary.md;
5. run `predict` with region heatmaps on a few group pictures of test identities, through the face detector,
   with the model fine-tuned from FRA: annotated pictures and heatmap panels land in <out>/predict.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from frafer.config.loader import load_config
from frafer.config.schema import FinetuneConfig
from frafer.data.fer.labels import BASIC_EXPRESSIONS
from frafer.data.synthetic.renderer import compose_group_picture, render_face, write_synthetic_dataset
from frafer.errors import FraferError
from frafer.eval.reports import markdown_table
from frafer.train.finetune import finetune
from frafer.train.linear_probe import linear_probe
from frafer.train.pretrain import pretrain

FER_SPLITS = {"train": ("Training", 1400, 100), "val": ("PublicTest", 350, 25), "test": ("PrivateTest", 700, 50)}
# Each method's change to the demo recipe (configs/demo.yaml is FRA's). MoCo v2's lr: its 0.03 per 256 images
# barely moves a tiny trunk in 256 steps (tests/train/test_learning.py measured kNN +3.0 points against +12.6 at 0.3);
# its queue holds 16 batches of the 4096 faces, not 65,536 keys (16 epochs' worth, all stale).
METHODS = {
    "FRA": [],
    "BYOL": ["method=byol"],
    "MoCo v2": ["method=moco_v2", "optim.base_lr=0.3", "moco.queue_size=1024"],
}
# Fine-tuning learning rates the demo tries for every initialisation, keeping each init's best on val: the two that
# won on val in configs/sweeps/finetune_recipes_tiny.yaml (docs/results.md), 3e-3 for random init and 1e-2 for the
# pre-trained trunks, whose best rate is 3x apart. One rate serves everyone with `--ft-lrs 3e-3`, in half the time.
DEMO_FT_LRS = (3e-3, 1e-2)


def _write_once(folder: Path, **kwargs) -> Path:
    """Generate a synthetic split unless a complete one is already there (a marker is written last)."""
    marker = folder / ".complete"
    wanted = json.dumps(kwargs, sort_keys=True)
    if marker.is_file() and marker.read_text() == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    write_synthetic_dataset(folder, **kwargs)
    marker.write_text(wanted)
    return folder


def write_demo_data(out_dir: Path, size: int, num_images: int, num_identities: int, seed: int,
                    expression_gain: float) -> dict[str, Path]:
    """Unlabelled pre-training faces and labelled train / val / test splits, each of its own identities."""
    folders = {"pretrain": _write_once(out_dir / "pretrain", num_images=num_images, size=size,
                                       num_identities=num_identities, seed=seed, expression_gain=expression_gain)}
    offset = num_identities
    for i, (split, (usage, count, identities)) in enumerate(FER_SPLITS.items(), start=1):
        folders[split] = _write_once(out_dir / f"fer_{split}", num_images=count, size=size,
                                     num_identities=identities, seed=seed + i, identity_offset=offset, usage=usage,
                                     expression_gain=expression_gain)
        offset += identities
    return folders


def run_demo(config_path: str, out: str, overrides: list[str] = (),
             finetune_config: str = "configs/demo_finetune.yaml", finetune_overrides: list[str] = (),
             methods: tuple[str, ...] = tuple(METHODS), ft_lrs: tuple[float, ...] = DEMO_FT_LRS) -> dict:
    """The demo: pre-train each method, then probe and fine-tune from each (and from random init) and table them.

    Fine-tuning runs at each of `ft_lrs` and keeps the one whose last epoch is best on the validation identities,
    separately for every initialisation: a pre-trained trunk and a random one need different learning rates, and
    one shared rate would favour whichever it suits (README, "The fine-tuning question").
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise FraferError(f"demo method '{unknown[0]}' is not one of {', '.join(METHODS)}")
    base = load_config(config_path, overrides)
    if base.data.source != "synthetic":
        raise FraferError(f"the demo recipe must use data.source=synthetic, {config_path} says {base.data.source}")
    out_dir = Path(out)
    syn = base.data.synthetic
    t0 = time.perf_counter()
    print(f"writing synthetic faces to {out_dir / 'data'} …", flush=True)
    data = write_demo_data(out_dir / "data", base.data.image_size, syn.num_images, syn.num_identities, syn.seed,
                           syn.expression_gain)
    print(f"data ready in {time.perf_counter() - t0:.1f}s", flush=True)

    # Pre-training: each method with the same data, schedule and budget.
    pre_common = [*overrides, "data.source=folder", f"data.root={data['pretrain']}",
                  f"monitor.knn_train_root={data['train']}", f"monitor.knn_val_root={data['test']}",
                  "monitor.knn_at_start=true"]
    runs, knn, minutes = {}, {}, {}
    for method in methods:
        run_dir = out_dir / f"pretrain_{_slug(method)}"
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"\n== pre-training {method} ==", flush=True)
        tick = time.perf_counter()
        result = pretrain(load_config(config_path, [*pre_common, *METHODS[method]]), run_dir)
        minutes[method] = (time.perf_counter() - tick) / 60
        runs[method], knn[method] = run_dir, result.knn
    knn_random = knn[methods[0]][0]["knn_top1"] if methods else None  # step 0: every method's trunk is the same

    # Downstream: linear probe and fine-tuning from each initialisation, same recipe and budget.
    rows = []
    order = [m for m in ("BYOL", "FRA", "MoCo v2") if m in methods]  # the table's rows, as the README has them
    chosen_runs = {}
    for name, init in (("random init", "none"), *((m, runs[m]) for m in order)):
        row = {"init": name, "knn_top1": knn_random if init == "none" else knn[name][-1]["knn_top1"]}
        slug = "random" if init == "none" else _slug(name)
        cfg_overrides = downstream_overrides(data, init, base.data.image_size, finetune_overrides)
        print(f"\n== linear probe from {name} ==", flush=True)
        run_dir = out_dir / f"lp_{slug}"
        shutil.rmtree(run_dir, ignore_errors=True)
        probe_cfg = load_config(finetune_config, cfg_overrides, FinetuneConfig)
        test = linear_probe(probe_cfg, run_dir).results["last"]["test"]
        row["lp_top1"], row["lp_macro_f1"] = test["top1"], test["macro_f1"]
        print(f"\n== fine-tune from {name}{' at each learning rate' if len(ft_lrs) > 1 else ''} ==", flush=True)
        chosen = finetune_choosing_lr(finetune_config, cfg_overrides, ft_lrs, out_dir, f"ft_{slug}")
        test = chosen["results"]["last"]["test"]  # the last epoch on the test identities, at the LR val chose
        row["ft_top1"], row["ft_macro_f1"] = test["top1"], test["macro_f1"]
        row["ft_lr"] = f"{chosen['lr']:g}"  # as text: the table's 2 decimals would print 3e-3 as 0.00
        chosen_runs[name] = chosen["run_dir"]
        rows.append(row)

    chance = 100 / len(BASIC_EXPRESSIONS)
    columns = ["init", "knn_top1", "lp_top1", "lp_macro_f1", "ft_lr", "ft_top1", "ft_macro_f1"]
    table = markdown_table(rows, columns)
    summary = {"rows": rows, "chance": chance, "pretrain_minutes": {k: round(v, 2) for k, v in minutes.items()},
               "total_minutes": round((time.perf_counter() - t0) / 60, 2), "test_images": FER_SPLITS["test"][1]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    (out_dir / "summary.md").write_text(table + "\n")
    print(f"\nSynthetic expressions of {FER_SPLITS['test'][2]} unseen identities ({FER_SPLITS['test'][1]} test images,"
          f" 7 classes, chance {chance:.1f}%); top-1 and macro-F1 in %, last epoch:\n")
    print(table)
    if "FRA" in methods:
        print("\n== predict: group pictures of test identities, through the face detector ==", flush=True)
        summary["predict"] = predict_group_pictures(chosen_runs["FRA"] / "model", out_dir / "predict",
                                                    _test_split_identities(syn.num_identities), base.data.image_size,
                                                    syn.expression_gain)
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    spent = ", ".join(f"{m} {minutes[m]:.1f} min" for m in methods)
    print(f"\npre-training: {spent}; total {summary['total_minutes']:.1f} min; folder: {out_dir}")
    return summary


def downstream_overrides(data: dict[str, Path], init: str | Path, image_size: int,
                         finetune_overrides: list[str] = ()) -> list[str]:
    """The downstream recipe's overrides: the labelled splits, the trunk, and the size the faces were written at.

    Probing and fine-tuning at the pre-training's size keeps a larger demo (configs/demo_regions.yaml, 80 px) from
    shrinking its faces back to the downstream recipe's 64 px; the user's `--ft` overrides come last and win.
    """
    return [f"data.root={data['train']}", f"data.extra_roots=[{data['val']},{data['test']}]",
            f"data.image_size={image_size}", f"model.init={init}", *finetune_overrides]


def finetune_choosing_lr(config: str, overrides: list[str], lrs: tuple[float, ...], out_dir: Path,
                         name: str) -> dict:
    """Fine-tune at each learning rate (folders `<name>_lr<lr>`, or `<name>` for one) and choose on validation.

    The last epoch's val top-1 decides, the number the demo then reports on test; returns {lr, run_dir, results,
    val: {lr: val top-1}}.
    """
    tried = {}
    for lr in lrs:
        run_dir = out_dir / (name if len(lrs) == 1 else f"{name}_lr{lr:g}")
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg = load_config(config, [*overrides, f"optim.lr={lr}"], FinetuneConfig)
        tried[lr] = (run_dir, finetune(cfg, run_dir).results)
    val = {lr: results["last"]["val"]["top1"] for lr, (_, results) in tried.items()}
    best = max(lrs, key=lambda lr: val[lr])  # ties: the first listed
    if len(lrs) > 1:
        print(f"{name}: val top-1 by learning rate {', '.join(f'{lr:g}: {v:.2f}' for lr, v in val.items())}; "
              f"chosen {best:g}", flush=True)
    return {"lr": best, "run_dir": tried[best][0], "results": tried[best][1], "val": val}


def _test_split_identities(pretrain_identities: int) -> range:
    """The identities of the demo's test split (after the pre-training, train and val ones)."""
    start = pretrain_identities + FER_SPLITS["train"][2] + FER_SPLITS["val"][2]
    return range(start, start + FER_SPLITS["test"][2])


def predict_group_pictures(bundle: Path, out: Path, identities: range, size: int, gain: float,
                           pictures: int = 3, per_picture: int = 4, seed: int = 1234) -> dict:
    """Render group pictures of unseen identities, predict them with heatmaps, and count what came back right.

    The face detector finds about half of these cartoon faces (it was trained on photos), so each picture is made
    of faces it finds on their own; every label in the pictures is then the model's, through detection and
    framing, as on a photo.
    """
    from frafer.infer.batch import run_predict
    from frafer.infer.predictor import Predictor

    predictor = Predictor.from_bundle(bundle, heatmaps=True)
    rng = np.random.default_rng(seed)
    folder = out / "pictures"
    folder.mkdir(parents=True, exist_ok=True)
    truth, faces, k = {}, [], 0
    while len(truth) < pictures and k < 50 * pictures * per_picture:
        label = k % len(BASIC_EXPRESSIONS)
        face = render_face(identities[k % len(identities)], label, 1.0, rng, size=size, expression_gain=gain)
        face = np.asarray(Image.fromarray(face).resize((2 * size, 2 * size), Image.BICUBIC))
        k += 1
        if predictor.detect(compose_group_picture([face])[0]):
            faces.append((face, BASIC_EXPRESSIONS[label]))
        if len(faces) == per_picture:
            image, boxes = compose_group_picture([f for f, _ in faces])
            name = f"group_{len(truth)}.png"
            Image.fromarray(image).save(folder / name)
            truth[str(folder / name)] = [(box, label) for box, (_, label) in zip(boxes, faces, strict=True)]
            faces = []
    summary = run_predict(predictor, [str(folder)], out, heatmaps=True)
    right = found = 0
    for line in map(json.loads, (out / "predictions.jsonl").read_text().splitlines()):
        for box, label in truth.get(line["file"], []):
            inside = [f for f in line["faces"] if _centre_inside(f["box"], box)]
            found += len(inside) == 1
            right += len(inside) == 1 and inside[0]["label"] == label
    total = sum(len(v) for v in truth.values())
    print(f"{found} of {total} faces found at their place, {right} labelled with their expression; pictures: "
          f"{out / 'annotated'}, heatmap panels ({predictor.heatmap_trunk} trunk): {out / 'heatmaps'}")
    return {"faces": total, "found": found, "labelled_right": right, "files": summary.files, "folder": str(out)}


def _centre_inside(found, box) -> bool:
    cx, cy = (found[0] + found[2]) / 2, (found[1] + found[3]) / 2
    return box[0] <= cx <= box[2] and box[1] <= cy <= box[3]


def _slug(method: str) -> str:
    """'MoCo v2' → 'moco_v2': the folder name of a method's runs."""
    return method.lower().replace(" ", "_")
