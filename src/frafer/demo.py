"""`make demo`: write synthetic faces, pre-train FRA on them, compare kNN accuracy with the random-init network.

The kNN memory bank and query set use identities the pre-training never saw, so the figure measures how well the
learned features separate expressions of new people.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from frafer.config import load_config
from frafer.data.labels import BASIC_EXPRESSIONS
from frafer.data.synthetic import write_synthetic_dataset
from frafer.errors import FraferError
from frafer.train.pretrain import pretrain

KNN_BANK_IMAGES, KNN_VAL_IMAGES = 1400, 700


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


def run_demo(config_path: str, out: str, overrides: list[str] = ()) -> dict:
    base = load_config(config_path, overrides)
    if base.data.source != "synthetic":
        raise FraferError(f"the demo recipe must use data.source=synthetic, {config_path} says {base.data.source}")
    out_dir = Path(out)
    size, syn = base.data.image_size, base.data.synthetic
    t0 = time.perf_counter()
    print(f"writing synthetic faces to {out_dir / 'data'} …", flush=True)
    unlabelled = _write_once(out_dir / "data" / "pretrain", num_images=syn.num_images, size=size,
                             num_identities=syn.num_identities, seed=syn.seed)
    # Held-out identities for the kNN monitor: bank and queries share none with pre-training or each other.
    bank = _write_once(out_dir / "data" / "knn_bank", num_images=KNN_BANK_IMAGES, size=size, num_identities=100,
                       seed=syn.seed + 1, identity_offset=syn.num_identities)
    val = _write_once(out_dir / "data" / "knn_val", num_images=KNN_VAL_IMAGES, size=size, num_identities=50,
                      seed=syn.seed + 2, identity_offset=syn.num_identities + 100)
    print(f"data ready in {time.perf_counter() - t0:.1f}s", flush=True)

    run_dir = out_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_config(config_path, [
        *overrides, "data.source=folder", f"data.root={unlabelled}", f"monitor.knn_train_root={bank}",
        f"monitor.knn_val_root={val}", "monitor.knn_at_start=true",
    ])
    t1 = time.perf_counter()
    result = pretrain(cfg, run_dir)
    minutes = (time.perf_counter() - t1) / 60
    start, end = result.knn[0]["knn_top1"], result.knn[-1]["knn_top1"]
    summary = {
        "knn_top1_random_init": start, "knn_top1_fra": end, "epochs": cfg.train.epochs, "steps": result.step,
        "pretrain_minutes": round(minutes, 2), "chance": 100 / len(BASIC_EXPRESSIONS), "run_dir": str(run_dir),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print()
    print(f"kNN top-1 on held-out synthetic identities ({len(BASIC_EXPRESSIONS)} expressions, "
          f"chance {summary['chance']:.1f}%, k={cfg.monitor.knn_k}):")
    trained = f"FRA, {cfg.train.epochs} epochs ({minutes:.1f} min)"
    print(f"  {'random-init network':<32}{start:6.2f}%")
    print(f"  {trained:<32}{end:6.2f}%")
    print(f"run folder: {run_dir}")
    return summary
