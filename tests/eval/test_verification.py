"""Verification pair lists (LFW, CFP) and the 10-fold protocol: ROC AUC, thresholds, end-to-end accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frafer.artifacts.checkpoint import latest_checkpoint
from frafer.data.readers.pairs import Pair, read_cfp_pairs, read_lfw_pairs, read_pairs
from frafer.errors import FraferError
from frafer.eval.pair_scores import best_threshold, embed_images, evaluate_pairs, kfold_accuracy, roc_auc
from frafer.eval.verification import verify_checkpoint
from tests.conftest import LFW_PAIRS, metrics_lines, write_lfw

# --- ROC AUC and the k-fold protocol -------------------------------------------------------------------------------


def test_roc_auc_hand_cases():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    # tie between a same (0.5) and a different (0.5) pair counts half: (0.5 + 1 + 1 + 1) / 4
    assert roc_auc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)
    assert roc_auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == 0.5
    assert roc_auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0.0


def test_roc_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    same = rng.random(40) < 0.5
    pos, neg = scores[same][:, None], scores[~same][None, :]
    expected = ((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size)
    assert roc_auc(scores, same) == pytest.approx(expected)


def test_roc_auc_needs_both_kinds():
    with pytest.raises(FraferError, match="both same and different"):
        roc_auc([0.1, 0.2], [1, 1])


def test_kfold_separable_scores_give_100():
    rng = np.random.default_rng(1)
    same = np.tile([True] * 5 + [False] * 5, 10)
    scores = np.where(same, rng.uniform(0.6, 1.0, 100), rng.uniform(-1.0, 0.4, 100))
    out = kfold_accuracy(scores, same, np.repeat(np.arange(10), 10))
    assert out["accuracy"] == 100.0 and out["std"] == 0.0 and out["auc"] == 100.0
    assert len(out["per_fold"]) == len(out["thresholds"]) == 10
    assert all(0.4 <= t <= 0.6 for t in out["thresholds"])


def test_kfold_threshold_comes_from_the_other_folds():
    # folds 0 and 1 put the gap at 0.5..0.8; fold 2 alone would split at 0.2..0.6, but it is judged at 0.65
    scores = [0.8, 0.9, 0.4, 0.5] * 2 + [0.6, 0.9, 0.1, 0.2]
    same = [1, 1, 0, 0] * 3
    folds = [0] * 4 + [1] * 4 + [2] * 4
    out = kfold_accuracy(scores, same, folds)
    assert out["thresholds"] == pytest.approx([0.55, 0.55, 0.65])
    assert out["per_fold"] == pytest.approx([100.0, 100.0, 75.0])
    assert out["accuracy"] == pytest.approx(275 / 3)
    assert out["std"] == pytest.approx(np.std([100, 100, 75]))
    assert out["folds"] == [0, 1, 2]


def test_best_threshold_ends_and_ties():
    assert best_threshold(np.array([0.2, 0.3]), np.array([True, True])) == pytest.approx(-0.8)  # all same
    assert best_threshold(np.array([0.2, 0.3]), np.array([False, False])) == pytest.approx(1.3)  # all different
    # 0.15 and 0.35 both get 2 of 3 right: the lower one wins
    assert best_threshold(np.array([0.1, 0.2, 0.5]), np.array([False, True, False])) == pytest.approx(0.15)


def test_kfold_rejects_one_fold_and_bad_scores():
    with pytest.raises(FraferError, match="at least 2 folds"):
        kfold_accuracy([0.1, 0.9], [0, 1], [0, 0])
    with pytest.raises(FraferError, match="NaN"):
        kfold_accuracy([0.1, float("nan")], [0, 1], [0, 1])
    with pytest.raises(FraferError, match="fold ids"):
        kfold_accuracy([0.1, 0.9], [0, 1], [0])


# --- fixtures in the native layouts --------------------------------------------------------------------------------







def lfw_path(root: Path, name: str, n: int) -> Path:
    return root / name / f"{name}_{n:04d}.jpg"


def test_read_lfw_pairs(tmp_path):
    root = write_lfw(tmp_path)
    pairs = read_lfw_pairs(root)  # pairs.txt found in root/..
    assert len(pairs) == 8
    assert pairs[0] == Pair(lfw_path(root, "Ann_A", 1), lfw_path(root, "Ann_A", 2), True, 0)
    assert pairs[3] == Pair(lfw_path(root, "Cat_C", 1), lfw_path(root, "Bob_B", 1), False, 0)
    assert pairs[7] == Pair(lfw_path(root, "Bob_B", 2), lfw_path(root, "Dan_D", 1), False, 1)
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4
    assert read_pairs("LFW", root) == pairs


def test_read_lfw_pairs_without_header_folds_by_runs(tmp_path):
    root = write_lfw(tmp_path)
    headerless = tmp_path / "headerless.txt"
    headerless.write_text(LFW_PAIRS.split("\n", 1)[1].replace("\t", " "))
    assert read_lfw_pairs(root, headerless) == read_lfw_pairs(root)


@pytest.mark.parametrize(
    "text, match",
    [
        (LFW_PAIRS.replace("Bob_B\t1\t2", "Bob_B\t1\t2\t3\t4"), r"pairs\.txt line 3: .* 5 fields"),
        (LFW_PAIRS.replace("Cat_C\t1\t2", "Cat_C\tone\t2"), r"pairs\.txt line 6: image number 'one'"),
        (LFW_PAIRS.replace("Cat_C\t1\tBob_B\t1", "Cat_C\t1\t2"), r"pairs\.txt line 5: expected a mismatched line"),
        (LFW_PAIRS.replace("2\t2", "3\t2", 1), r"header says 3 folds .* \(12 lines\) but the file has 8 pair lines"),
        (LFW_PAIRS.replace("2\t2", "0\t2", 1), r"pairs\.txt line 1: header '0 2' must give positive counts"),
        ("", "is empty"),
    ],
)
def test_read_lfw_pairs_errors_name_file_and_line(tmp_path, text, match):
    root = write_lfw(tmp_path, text)
    with pytest.raises(FraferError, match=match):
        read_lfw_pairs(root)


def test_read_lfw_pairs_missing_file(tmp_path):
    with pytest.raises(FraferError, match=r"LFW pairs file not found: looked for .*lfw/pairs\.txt"):
        read_lfw_pairs(tmp_path / "lfw")
    with pytest.raises(FraferError, match=r"nowhere\.txt does not exist"):
        read_lfw_pairs(tmp_path, tmp_path / "nowhere.txt")


def write_cfp(tmp_path: Path) -> Path:
    """cfp-dataset/Protocol with 4 frontal and 2 profile images over 2 people, and 2 folds for FP and FF."""
    root = tmp_path / "cfp-dataset"
    proto = root / "Protocol"
    frontal = ["001/frontal/01.jpg", "001/frontal/02.jpg", "002/frontal/01.jpg", "002/frontal/02.jpg"]
    profile = ["001/profile/01.jpg", "002/profile/01.jpg"]
    for rel in frontal + profile:
        path = root / "Data" / "Images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (200, 40, 40) if rel.startswith("001") else (40, 40, 200)).save(path)
    proto.mkdir(parents=True)
    (proto / "Pair_list_F.txt").write_text("".join(f"{i} ../Data/Images/{p}\n" for i, p in enumerate(frontal, 1)))
    (proto / "Pair_list_P.txt").write_text("".join(f"{i} ../Data/Images/{p}\n" for i, p in enumerate(profile, 1)))
    splits = {
        "FP": {"01": ("1,1\n", "3,1\n"), "02": ("4,2\n", "2,2\n")},
        "FF": {"01": ("1,2\n", "1,3\n"), "02": ("3,4\n", "2,4\n")},
    }
    for protocol, folds in splits.items():
        for fold, (same, diff) in folds.items():
            d = proto / "Split" / protocol / fold
            d.mkdir(parents=True)
            (d / "same.txt").write_text(same)
            (d / "diff.txt").write_text(diff)
    return root


def test_read_cfp_pairs_fp_and_ff(tmp_path):
    root = write_cfp(tmp_path)
    img = root / "Data" / "Images"
    fp = read_cfp_pairs(root, "FP")
    assert fp == [
        Pair(img / "001/frontal/01.jpg", img / "001/profile/01.jpg", True, 0),
        Pair(img / "002/frontal/01.jpg", img / "001/profile/01.jpg", False, 0),
        Pair(img / "002/frontal/02.jpg", img / "002/profile/01.jpg", True, 1),
        Pair(img / "001/frontal/02.jpg", img / "002/profile/01.jpg", False, 1),
    ]
    assert all(p.path_a.is_file() and p.path_b.is_file() for p in fp)
    ff = read_pairs("cfp-ff", root)
    assert [(p.path_a.parts[-3:], p.path_b.parts[-3:], p.same, p.fold) for p in ff] == [
        (("001", "frontal", "01.jpg"), ("001", "frontal", "02.jpg"), True, 0),
        (("001", "frontal", "01.jpg"), ("002", "frontal", "01.jpg"), False, 0),
        (("002", "frontal", "01.jpg"), ("002", "frontal", "02.jpg"), True, 1),
        (("001", "frontal", "02.jpg"), ("002", "frontal", "02.jpg"), False, 1),
    ]
    assert read_pairs("cfp-fp", root) == fp


def test_read_cfp_pairs_errors(tmp_path):
    root = write_cfp(tmp_path)
    proto = root / "Protocol"
    with pytest.raises(FraferError, match="unknown CFP protocol 'PP'"):
        read_cfp_pairs(root, "PP")
    with pytest.raises(FraferError, match="unknown verification pair list 'agedb'"):
        read_pairs("agedb", root)
    (proto / "Split" / "FP" / "02" / "diff.txt").write_text("2,2\n2;1\n")
    with pytest.raises(FraferError, match=r"FP/02/diff\.txt line 2: '2;1' is not two indices"):
        read_cfp_pairs(root, "FP")
    (proto / "Split" / "FP" / "02" / "diff.txt").write_text("2,3\n")
    not_listed = r"diff\.txt line 1: index 3 is not listed in Pair_list_P\.txt \(it lists 1\.\.2\)"
    with pytest.raises(FraferError, match=not_listed):
        read_cfp_pairs(root, "FP")
    (proto / "Pair_list_P.txt").write_text("1 ../Data/Images/001/profile/01.jpg\nx ../y.jpg\n")
    with pytest.raises(FraferError, match=r"Pair_list_P\.txt line 2: 'x \.\./y\.jpg' is not `<index> <image path>`"):
        read_cfp_pairs(root, "FP")
    (proto / "Pair_list_P.txt").unlink()
    with pytest.raises(FraferError, match=r"Pair_list_P\.txt does not exist"):
        read_cfp_pairs(root, "FP")


# --- embedding and end-to-end evaluation ---------------------------------------------------------------------------


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)


def mean_colour(x: torch.Tensor) -> torch.Tensor:
    """A hand-made face embedding: the image's mean colour about mid-grey, (B, 3)."""
    return x.mean(dim=(2, 3)) - 0.5


def test_embed_images_once_each_normalised_and_counts_unreadable(tmp_path):
    root = write_lfw(tmp_path)
    broken = root / "Ann_A" / "Ann_A_0003.jpg"
    broken.write_bytes(b"not a jpeg")
    seen = []

    def embed(x):
        seen.append(len(x))
        return mean_colour(x)

    paths = [lfw_path(root, "Ann_A", 1), lfw_path(root, "Bob_B", 1), lfw_path(root, "Ann_A", 1), broken]
    out, unreadable = embed_images(embed, paths, to_tensor, batch_size=2)
    assert unreadable == 1 and sum(seen) == 2
    assert set(out) == {paths[0], paths[1]}
    assert out[paths[0]].shape == (3,)
    assert out[paths[0]].norm().item() == pytest.approx(1.0)
    with pytest.raises(FraferError, match=r"\(B, D\) tensor for a batch of B=2, got \(2, 3, 8, 8\)"):
        embed_images(lambda x: x, paths, to_tensor, batch_size=2)


def test_evaluate_pairs_lfw_colour_identities_is_perfect(tmp_path):
    root = write_lfw(tmp_path)
    out = evaluate_pairs(mean_colour, read_lfw_pairs(root), to_tensor, batch_size=3)
    assert out["accuracy"] == pytest.approx(100.0)
    assert out["auc"] == pytest.approx(100.0)
    assert out["pairs"] == 8 and out["skipped_pairs"] == 0 and out["unreadable_images"] == 0
    assert len(out["per_fold"]) == 2


def test_evaluate_pairs_cfp_and_a_colour_blind_embedding(tmp_path):
    root = write_cfp(tmp_path)
    pairs = read_cfp_pairs(root, "FP")
    assert evaluate_pairs(mean_colour, pairs, to_tensor)["accuracy"] == pytest.approx(100.0)
    blind = evaluate_pairs(lambda x: torch.ones(len(x), 4), pairs, to_tensor)  # every pair scores 1: chance
    assert blind["accuracy"] == pytest.approx(50.0) and blind["auc"] == pytest.approx(50.0)


def test_evaluate_pairs_skips_pairs_with_a_corrupt_image(tmp_path):
    root = write_lfw(tmp_path)
    path = lfw_path(root, "Cat_C", 1)
    path.write_bytes(path.read_bytes()[:20])  # truncated JPEG
    out = evaluate_pairs(mean_colour, read_lfw_pairs(root), to_tensor)
    # Cat_C_0001 is in fold 0's "Cat_C 1 Bob_B 1" and fold 1's "Cat_C 1 2"
    assert out["skipped_pairs"] == 2 and out["pairs"] == 6 and out["unreadable_images"] == 1
    assert out["accuracy"] == pytest.approx(100.0)
    with pytest.raises(FraferError, match="empty pair list"):
        evaluate_pairs(mean_colour, [], to_tensor)


# ----------------------------------------------------------------------------------------------- verification


def test_verify_checkpoint_on_lfw(fra_run, lfw):
    run_dir, _ = fra_run
    result, path = verify_checkpoint(str(run_dir), "lfw", str(lfw))
    assert 0 <= result["accuracy"] <= 100 and 0 <= result["auc"] <= 100
    assert result["pairs"] == 8 and result["image_size"] == 32 and result["protocol"] == "lfw"
    assert path == latest_checkpoint(run_dir) / "verification_lfw_lfw.json"
    assert json.loads(path.read_text())["accuracy"] == result["accuracy"]


def test_pretraining_monitors_verification(fra_run):
    run_dir, result = fra_run
    assert result.step == 2 and [v["epoch"] for v in result.verification] == [1]
    record = result.verification[0]
    assert 0 <= record["accuracy"] <= 100 and record["skipped_pairs"] == 0
    logged = [x for x in metrics_lines(run_dir) if x["kind"] == "monitor"]
    assert len(logged) == 1 and logged[0]["verify_accuracy"] == record["accuracy"]
