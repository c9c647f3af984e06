"""Subject-disjoint folds, leave-one-subject-out, holdout splits and the shared-image check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frafer.data.fer.dataset import FERDataset, FERSample
from frafer.data.fer.folds import (
    check_disjoint_splits,
    holdout_split,
    label_subset,
    leave_one_subject_out,
    subject_folds,
)
from frafer.errors import FraferError

SUBJECT_SIZES = {"S01": 9, "S02": 7, "S03": 6, "S04": 5, "S05": 4, "S06": 3, "S07": 3, "S08": 2, "S09": 2, "S10": 1}


def make_samples(sizes: dict[str, int] = SUBJECT_SIZES) -> list[FERSample]:
    samples = []
    for subject, count in sizes.items():
        samples += [FERSample(Path(f"/data/{subject}_{i}.png"), i % 7, f"{subject}_{i}.png", subject=subject)
                    for i in range(count)]
    return samples


def subjects_of(samples, indices) -> set[str]:
    return {samples[i].subject for i in indices}


@pytest.mark.parametrize("k", [2, 3, 5])
def test_subject_folds_are_disjoint_cover_and_balanced(k):
    samples = make_samples()
    folds = subject_folds(samples, k, seed=3)
    assert len(folds) == k
    tests = [i for _, test in folds for i in test]
    assert sorted(tests) == list(range(len(samples)))  # every sample tested exactly once
    for train, test in folds:
        assert test and subjects_of(samples, train).isdisjoint(subjects_of(samples, test))
        assert sorted(train + test) == list(range(len(samples)))
    sizes = [len(test) for _, test in folds]
    assert max(sizes) - min(sizes) <= max(SUBJECT_SIZES.values())
    assert subject_folds(samples, k, seed=3) == folds  # seeded


def test_subject_folds_balance_many_small_subjects():
    samples = make_samples({f"P{i:02d}": 1 + i % 3 for i in range(30)})  # 60 samples
    sizes = [len(test) for _, test in subject_folds(samples, 4, seed=0)]
    assert max(sizes) - min(sizes) <= 3


def test_subject_folds_errors():
    samples = make_samples()
    with pytest.raises(FraferError, match="at least 11 subjects, found 10"):
        subject_folds(samples, 11)
    with pytest.raises(FraferError, match="k >= 2"):
        subject_folds(samples, 1)
    unknown = [*samples, FERSample(Path("/data/x.png"), 0, "x.png")]
    with pytest.raises(FraferError, match="sample x.png has no subject"):
        subject_folds(unknown, 3)


def test_leave_one_subject_out():
    samples = make_samples()
    folds = leave_one_subject_out(samples)
    assert len(folds) == len(SUBJECT_SIZES)
    for (train, test), subject in zip(folds, sorted(SUBJECT_SIZES), strict=True):
        assert subjects_of(samples, test) == {subject} and len(test) == SUBJECT_SIZES[subject]
        assert subject not in subjects_of(samples, train) and len(train) + len(test) == len(samples)
    with pytest.raises(FraferError, match="at least 2 subjects"):
        leave_one_subject_out(make_samples({"A": 3}))


def test_holdout_by_subject_and_by_sample():
    samples = make_samples()
    kept, held = holdout_split(samples, 0.2, seed=1)
    assert {s.subject for s in kept}.isdisjoint({s.subject for s in held})
    assert len(kept) + len(held) == len(samples) and {s.key for s in kept} | {s.key for s in held} == {
        s.key for s in samples
    }
    assert abs(len(held) - 0.2 * len(samples)) <= max(SUBJECT_SIZES.values())
    anonymous = [FERSample(Path(f"/d/{i}.png"), 0, f"{i}.png") for i in range(20)]
    kept, held = holdout_split(anonymous, 0.25, seed=0)
    assert len(held) == 5 and len(kept) == 15 and not {s.key for s in kept} & {s.key for s in held}
    kept_again, held_again = holdout_split(anonymous, 0.25, seed=0)
    assert [s.key for s in held_again] == [s.key for s in held]
    kept, held = holdout_split(samples, 0.2, seed=1, by_subject=False)
    assert len(held) == round(0.2 * len(samples))


def test_holdout_errors():
    samples = make_samples()
    with pytest.raises(FraferError, match="between 0 and 1"):
        holdout_split(samples, 1.0, seed=0)
    partial = [*samples, FERSample(Path("/d/anon.png"), 0, "anon.png")]
    with pytest.raises(FraferError, match="anon.png has no subject"):
        holdout_split(partial, 0.2, seed=0)
    with pytest.raises(FraferError, match="at least 2 subjects"):
        holdout_split(make_samples({"A": 4}), 0.5, seed=0)


def test_label_subsets_are_stratified_fixed_and_nested():
    # 100 samples of class 0, 30 of class 1, 3 of class 2
    samples = [FERSample(Path(f"/d/{c}_{i}.png"), c, f"{c}_{i}.png") for c, n in ((0, 100), (1, 30), (2, 3))
               for i in range(n)]
    tenth = label_subset(samples, 0.1, seed=3)
    counts = [sum(s.label == c for s in tenth) for c in range(3)]
    assert counts == [10, 3, 1]  # round(0.1 n), at least one of every class
    assert [s.key for s in label_subset(samples, 0.1, seed=3)] == [s.key for s in tenth]  # fixed by its seed
    assert [s.key for s in label_subset(samples, 0.1, seed=4)] != [s.key for s in tenth]
    assert {s.key for s in label_subset(samples, 0.01, seed=3)} <= {s.key for s in tenth}  # 1 % inside 10 %
    assert {s.key for s in tenth} <= {s.key for s in label_subset(samples, 0.5, seed=3)}
    assert label_subset(samples, 1.0, seed=3) == samples
    assert [s.key for s in tenth] == sorted((s.key for s in tenth), key=[s.key for s in samples].index)  # order kept
    with pytest.raises(FraferError, match=r"label fraction must be in \(0, 1\]"):
        label_subset(samples, 0.0)


def test_check_disjoint_splits(tmp_path):
    a, b = FERSample(tmp_path / "a.png", 0, "a.png"), FERSample(tmp_path / "b.png", 1, "b.png")
    check_disjoint_splits(FERDataset("ok", {"train": [a], "test": [b]}, ()))  # nothing shared: no error
    same_file = FERSample(tmp_path / "sub" / ".." / "a.png", 2, "sub/../a.png")
    with pytest.raises(FraferError, match="image sub/../a.png is in both the 'train' and the 'test' split"):
        check_disjoint_splits(FERDataset("dup", {"train": [a, b], "test": [same_file]}, ()))
    pixels = np.zeros((48, 48), np.uint8)
    row = FERSample(pixels, 0, "fer2013.csv:7")
    other = FERSample(pixels.copy(), 0, "fer2013.csv:8")
    check_disjoint_splits(FERDataset("csv", {"train": [row], "val": [other]}, ()))
    with pytest.raises(FraferError, match="fer2013.csv:7 is in both the 'train' and the 'val' split"):
        check_disjoint_splits(FERDataset("csv", {"train": [row], "val": [FERSample(pixels, 3, "fer2013.csv:7")]}, ()))


def test_column_folds_follow_the_dataset_and_refuse_a_subject_in_two_folds():
    from frafer.data.fer.folds import column_folds

    samples = [FERSample(image=Path(f"{i}.png"), label=0, key=str(i), subject=f"s{i // 2}", fold=str(i // 4 + 1))
               for i in range(12)]  # folds "1", "2", "3"; subjects two images each, never split
    folds = column_folds(samples)
    assert [test for _, test in folds] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert all(sorted(train + test) == list(range(12)) for train, test in folds)
    ten = [FERSample(image=Path(f"{i}.png"), label=0, key=str(i), fold=str(i)) for i in range(11)]
    assert [test for _, test in column_folds(ten)][:3] == [[0], [1], [2]]  # natural order: "10" comes last
    assert column_folds(ten)[-1][1] == [10]
    leaky = [*samples[:-1], FERSample(image=Path("x.png"), label=0, key="x", subject="s0", fold="3")]
    with pytest.raises(FraferError, match="subject s0 is in folds 1 and 3"):
        column_folds(leaky)
    with pytest.raises(FraferError, match="no fold"):
        column_folds([*samples, FERSample(image=Path("y.png"), label=0, key="y")])
