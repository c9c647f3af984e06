"""Do a bundle's region heatmaps land on the same facial part across faces, under the pre-trained or the fine-tuned
trunk? The measurement behind predict's default `--heatmap-trunk`.

Faces are frafer's synthetic ones, whose brow, eye, nose and mouth areas are known per image
(`frafer.data.synthetic.renderer.face_regions`). For each face and region, the heatmap (upsampled to the image) is
read as a density over the parts plus the rest of the image (mass per part divided by the part's area); the
region's part on that face is the densest one. Per region, consistency is the share of faces on which it picks its
most common part (1 = always the same part); its control is the same figure once each face's region labels are
shuffled (what the parts' own frequencies give). Consistency alone can mislead: nearly uniform maps with a faint
systematic tilt pick the same part everywhere. So it comes with concentration, the density of each region's chosen
part over the mean density of all parts (1 for maps that ignore the face), and sharpness, the mean per-pixel max
over regions (1/N for uniform maps). Only where both are well above their floors do regions sit on facial parts.

    python benchmarks/region_consistency.py runs/demo/ft_fra/model --faces 200

On real faces (`--format ferplus --root FERPLUS`), the parts come from MTCNN's five landmarks on each face instead:
discs around the eyes, the nose tip and the mouth, a band above the eyes for the brows, the rest.
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np
import torch
from framing import crop_landmarks  # benchmarks/framing.py

from frafer.data.fer.dataset import load_sample_image
from frafer.data.readers.fer_formats import read_fer_dataset
from frafer.data.synthetic.renderer import face_regions, render_face
from frafer.infer.detect import mtcnn_detector
from frafer.infer.draw import upsample_maps
from frafer.infer.predictor import Predictor

PARTS = ("brows", "eyes", "nose", "mouth", "rest")


def faces_with_parts(count: int, size: int, seed: int, gain: float, identity_offset: int):
    rng = np.random.default_rng(seed)
    for k in range(count):
        state = rng.bit_generator.state
        image = render_face(identity_offset + k, k % 7, 1.0, rng, size=size, expression_gain=gain)
        parts_rng = np.random.default_rng()
        parts_rng.bit_generator.state = state  # the same nuisance draws: masks line up with the image
        masks = face_regions(identity_offset + k, parts_rng, size=size, expression_gain=gain)
        rest = ~np.any(np.stack(list(masks.values())), axis=0)
        yield image, [masks[p] for p in PARTS[:-1]] + [rest]


def disc(size: int, centre, radius: float) -> np.ndarray:
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    return (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius ** 2


def landmark_parts(landmarks: np.ndarray, size: int) -> list[np.ndarray]:
    """Brows, eyes, nose, mouth and the rest of a (size, size) face from its 5 landmarks (crop pixels)."""
    left_eye, right_eye, nose, mouth_left, mouth_right = landmarks
    eye_gap = float(np.linalg.norm(right_eye - left_eye))
    r = 0.3 * eye_gap
    up = np.array([0.0, -0.45 * eye_gap])
    eyes = disc(size, left_eye, r) | disc(size, right_eye, r)
    brows = (disc(size, left_eye + up, r) | disc(size, right_eye + up, r)) & ~eyes
    nose_part = disc(size, nose, r) & ~eyes
    mouth = disc(size, (mouth_left + mouth_right) / 2, 0.6 * float(np.linalg.norm(mouth_right - mouth_left)))
    mouth &= ~nose_part
    rest = ~(brows | eyes | nose_part | mouth)
    return [brows, eyes, nose_part, mouth, rest]


def dataset_faces(fmt: str, root: str, split: str, count: int, size: int, predictor: Predictor):
    """Real faces of a labelled dataset at the bundle's input size, with parts from MTCNN's landmarks (upscaled 4x
    inside a border, as benchmarks/framing.py does); faces MTCNN misses are left out."""
    detect = mtcnn_detector()
    given = 0
    for sample in read_fer_dataset(fmt, root).split(split):
        if given == count:
            return
        rgb = np.asarray(load_sample_image(sample).convert("RGB"))
        marks = crop_landmarks(rgb, detect, 4.0, 0.5)
        if marks is None:
            continue
        given += 1
        yield predictor.crop(rgb, None), landmark_parts(marks * (size / rgb.shape[0]), size)


def measure(predictor: Predictor, faces) -> dict:
    pairs = []
    for image, parts in faces:
        _, maps = predictor.classify_crops(predictor.crop(image, predictor.detect(image)[0])[None])
        pairs.append((upsample_maps(maps[0], image.shape[0]), parts))  # (N, S, S)
    return score_regions(pairs)


def score_regions(pairs, controls: int = 20, seed: int = 0) -> dict:
    """Consistency, concentration and sharpness of (heatmaps (N, S, S), parts [(S, S) bool]) pairs, one per face.

    control: the consistency the same picks give once each face's region labels are shuffled (the mean over
    `controls` shuffles): what a region's "most common part" reaches by the parts' own frequencies alone.
    """
    picks, sharp, concentration = [], [], []
    for maps, parts in pairs:
        density = np.array([[m[p].sum() / max(p.sum(), 1) for p in parts] for m in maps])  # (N, parts)
        picks.append(density.argmax(axis=1))
        concentration.append((density.max(axis=1) / density.mean(axis=1)).mean())
        sharp.append(maps.max(axis=0).mean())
    picks = np.stack(picks)  # (faces, N)
    per_region = [(PARTS[part], hits / len(picks))
                  for part, hits in (Counter(picks[:, n]).most_common(1)[0] for n in range(picks.shape[1]))]
    rng = np.random.default_rng(seed)
    shuffled = [_consistency(rng.permuted(picks, axis=1)) for _ in range(controls)]
    return {"consistency": _consistency(picks), "control": float(np.mean(shuffled)), "per_region": per_region,
            "sharpness": float(np.mean(sharp)), "uniform": 1 / picks.shape[1],
            "concentration": float(np.mean(concentration))}


def _consistency(picks: np.ndarray) -> float:
    """Mean over regions of the share of faces on which the region picks its most common part; picks (faces, N)."""
    return float(np.mean([Counter(picks[:, n]).most_common(1)[0][1] / len(picks) for n in range(picks.shape[1])]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle fine-tuned from an FRA run (it carries the region model)")
    p.add_argument("--faces", type=int, default=200)
    p.add_argument("--gain", type=float, default=1.8, help="expression gain of the synthetic faces")
    p.add_argument("--identity-offset", type=int, default=10_000, help="identities no split of the demo used")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="", help="real faces of this data.format instead of synthetic ones")
    p.add_argument("--root", default="", help="the dataset root (with --format)")
    p.add_argument("--split", default="val")
    args = p.parse_args()
    torch.set_num_threads(1)
    for trunk in ("pretrained", "finetuned"):
        predictor = Predictor.from_bundle(args.bundle, detector="none", heatmaps=True, heatmap_trunk=trunk)
        size = predictor.bundle.input_size
        if args.format:
            faces = dataset_faces(args.format, args.root, args.split, args.faces, size, predictor)
        else:
            faces = faces_with_parts(args.faces, size, args.seed, args.gain, args.identity_offset)
        r = measure(predictor, faces)
        regions = ", ".join(f"{part} {share:.2f}" for part, share in r["per_region"])
        print(f"{trunk:>10} trunk: consistency {r['consistency']:.2f} (shuffled regions {r['control']:.2f}), "
              f"concentration {r['concentration']:.3f} "
              f"(floor 1), sharpness {r['sharpness']:.3f} (floor {r['uniform']:.3f}); per region: {regions}")


if __name__ == "__main__":
    main()
