"""Tests for the procedural synthetic faces (frafer.data.synthetic.renderer)."""

import csv

import numpy as np
import pytest
from PIL import Image

from frafer.data.fer.labels import BASIC_EXPRESSIONS, FERPLUS_COLUMNS
from frafer.data.synthetic.renderer import (
    EXPRESSION_GAIN,
    EXPRESSION_TO_FERPLUS,
    SyntheticFace,
    SyntheticFaces,
    face_regions,
    render_face,
    simulate_votes,
    write_synthetic_dataset,
)
from frafer.errors import FraferError


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(list(key))


def test_render_shape_dtype_and_determinism():
    a = render_face(3, 1, 0.8, _rng(7), size=64)
    b = render_face(3, 1, 0.8, _rng(7), size=64)
    c = render_face(3, 1, 0.8, _rng(8), size=64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert render_face(3, 1, 0.8, _rng(7), size=48).shape == (48, 48, 3)


def test_dataset_is_deterministic_by_seed_and_index():
    ds1, ds2, other = SyntheticFaces(10, seed=5), SyntheticFaces(30, seed=5), SyntheticFaces(10, seed=6)
    img, label = ds1[4]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (64, 64)
    assert isinstance(label, int) and label == ds1.labels[4]
    # image i depends on (seed, i) only, not on the dataset length
    assert np.array_equal(np.asarray(img), np.asarray(ds2[4][0]))
    assert ds1.meta(4) == ds2.meta(4)
    assert not np.array_equal(np.asarray(img), np.asarray(other[4][0]))
    assert np.array_equal(np.asarray(ds1[-1][0]), np.asarray(ds1[9][0]))
    with pytest.raises(IndexError):
        ds1[10]


def test_cache_serves_identical_images():
    ds = SyntheticFaces(3, seed=2, cache=True)
    first, second = ds[1][0], ds[1][0]
    assert first is not second  # callers get copies they may mutate
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert np.array_equal(np.asarray(first), np.asarray(SyntheticFaces(3, seed=2)[1][0]))


def test_identity_is_consistent_and_distinct():
    # identical nuisance (same rng state) and expression: same identity -> same pixels, other -> different
    same = [render_face(11, 0, 0.5, _rng(1), identity_seed=3) for _ in range(2)]
    assert np.array_equal(*same)
    assert not np.array_equal(same[0], render_face(12, 0, 0.5, _rng(1), identity_seed=3))
    assert not np.array_equal(same[0], render_face(11, 0, 0.5, _rng(1), identity_seed=4))
    # identities of a dataset stay inside [identity_offset, identity_offset + num_identities)
    ds = SyntheticFaces(300, num_identities=5, identity_offset=40, seed=0)
    ids = {ds.meta(i).identity for i in range(len(ds))}
    assert ids == set(range(40, 45))


def test_labels_balanced_and_available_without_rendering():
    ds = SyntheticFaces(703, seed=9)
    assert ds.labels.shape == (703,) and ds.labels.dtype == np.int64
    counts = np.bincount(ds.labels, minlength=7)
    assert counts.max() - counts.min() <= 1
    assert ds.classes == BASIC_EXPRESSIONS
    assert all(ds.meta(i).label == ds.labels[i] for i in range(0, 703, 37))
    assert not np.array_equal(ds.labels[:14], np.tile(np.arange(7), 2))  # shuffled


def test_meta_fields_and_intensity_range():
    ds = SyntheticFaces(200, num_identities=20, seed=1)
    metas = [ds.meta(i) for i in range(len(ds))]
    assert all(isinstance(m, SyntheticFace) for m in metas)
    assert all(m.index == i for i, m in enumerate(metas))
    assert all(0 <= m.identity < 20 for m in metas)
    intens = np.array([m.intensity for m in metas])
    assert intens.min() >= 0.25 and intens.max() <= 1.0 and intens.std() > 0.1


def test_votes_sum_and_agreement_rises_with_intensity():
    assert EXPRESSION_TO_FERPLUS["happy"] == FERPLUS_COLUMNS.index("happiness")
    assert EXPRESSION_TO_FERPLUS["anger"] == FERPLUS_COLUMNS.index("anger")
    rng = _rng(123)
    low, high = [], []
    for k in range(1400):
        label = 1 + k % 6  # non-neutral classes: their intensity changes the picture
        for intensity, bucket in ((0.3, low), (1.0, high)):
            votes = simulate_votes(label, intensity, rng)
            assert len(votes) == 10 and sum(votes) == 10 and min(votes) >= 0
            bucket.append(votes[EXPRESSION_TO_FERPLUS[BASIC_EXPRESSIONS[label]]] / 10)
    # expected agreement is ~0.53 at 0.3 and ~0.95 at 1.0; the margin is many standard errors
    assert np.mean(high) > np.mean(low) + 0.25
    ds = SyntheticFaces(140, seed=4)
    for i in range(len(ds)):
        assert sum(ds.meta(i).votes) == 10 and len(ds.meta(i).votes) == len(FERPLUS_COLUMNS)


def test_expression_signal_is_small_and_regional():
    """Same identity and nuisance: expression changes pixels only in brows/eyes/nose/mouth regions,
    and changes far fewer of them than swapping the identity does."""
    size, identity = 64, 17
    for trial in range(3):
        key = (2024, trial)
        neutral = render_face(identity, 0, 1.0, _rng(*key), size).astype(np.float32)
        regions = face_regions(identity, _rng(*key), size)
        assert set(regions) == {"brows", "eyes", "nose", "mouth"}
        mask = np.logical_or.reduce(list(regions.values()))
        assert 0.02 < mask.mean() < 0.65  # loose boxes around the features that can move
        other_identity = render_face(identity + 1, 0, 1.0, _rng(*key), size).astype(np.float32)
        identity_diff = np.abs(other_identity - neutral).mean()
        for label in range(1, 7):
            expr = render_face(identity, label, 1.0, _rng(*key), size).astype(np.float32)
            diff = np.abs(expr - neutral).mean(axis=2)
            assert diff.sum() > 0, BASIC_EXPRESSIONS[label]
            assert diff[mask].sum() / diff.sum() > 0.97, BASIC_EXPRESSIONS[label]
            assert diff.mean() < 0.5 * identity_diff, BASIC_EXPRESSIONS[label]
            assert (diff > 8).mean() < 0.15, BASIC_EXPRESSIONS[label]  # a full expression moves few pixels
            # subtle at low intensity: a weak expression moves fewer pixels than a strong one
            weak = render_face(identity, label, 0.3, _rng(*key), size).astype(np.float32)
            assert np.abs(weak - neutral).mean() < diff.mean(), BASIC_EXPRESSIONS[label]


def test_expression_gain_scales_expressions_and_their_regions():
    """A larger gain moves an expression's pixels further from neutral, still only inside the regions
    face_regions reports for that gain; neutral faces, identity and nuisance do not depend on it."""
    from frafer.config.schema import SyntheticConfig

    assert SyntheticConfig().expression_gain == EXPRESSION_GAIN  # config and generator share one default
    size, identity, key = 64, 9, (7, 1)
    assert np.array_equal(render_face(identity, 0, 1.0, _rng(*key), size, expression_gain=3.0),
                          render_face(identity, 0, 1.0, _rng(*key), size))
    neutral = render_face(identity, 0, 1.0, _rng(*key), size).astype(np.float32)
    moved_by_label = []
    for label in range(1, 7):
        moved = []
        for gain in (1.0, EXPRESSION_GAIN, 3.0):
            expr = render_face(identity, label, 1.0, _rng(*key), size, expression_gain=gain).astype(np.float32)
            diff = np.abs(expr - neutral).mean(axis=2)
            mask = np.logical_or.reduce(list(face_regions(identity, _rng(*key), size, expression_gain=gain).values()))
            assert diff[mask].sum() / diff.sum() > 0.97, (BASIC_EXPRESSIONS[label], gain)
            moved.append(diff.mean())
        moved_by_label.append(moved)
        assert moved[0] < moved[2], BASIC_EXPRESSIONS[label]  # some geometry saturates, so not per step
    mean_moved = np.mean(moved_by_label, axis=0)
    assert mean_moved[0] < mean_moved[1] < mean_moved[2]
    default, strong = SyntheticFaces(14, size=32, seed=1), SyntheticFaces(14, size=32, seed=1, expression_gain=3.0)
    assert strong.labels.tolist() == default.labels.tolist()
    assert [strong.meta(i) for i in range(14)] == [default.meta(i) for i in range(14)]
    same = [np.array_equal(strong.image(i), default.image(i)) for i in range(14)]
    assert same == [default.meta(i).label == 0 for i in range(14)]  # only non-neutral faces change


def test_neutral_ignores_intensity():
    a = render_face(5, 0, 0.25, _rng(3))
    b = render_face(5, 0, 1.0, _rng(3))
    assert np.array_equal(a, b)


def test_write_synthetic_dataset_layout(tmp_path):
    out = write_synthetic_dataset(
        tmp_path / "synth", 16, size=32, num_identities=4, seed=3, usage="PublicTest"
    )
    assert out == tmp_path / "synth"
    ds = SyntheticFaces(16, size=32, num_identities=4, seed=3)
    with open(out / "votes.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Usage", "Image name", *FERPLUS_COLUMNS]
    assert len(rows) == 17
    for i, row in enumerate(rows[1:]):
        m = ds.meta(i)
        name = f"{BASIC_EXPRESSIONS[m.label]}/{i:06d}.png"
        assert row[0] == "PublicTest" and row[1] == name
        assert tuple(int(v) for v in row[2:]) == m.votes
        on_disk = np.asarray(Image.open(out / name).convert("RGB"))
        assert np.array_equal(on_disk, np.asarray(ds[i][0]))
    with open(out / "meta.csv", newline="") as f:
        meta = list(csv.DictReader(f))
    assert list(meta[0]) == ["Image name", "identity", "label", "intensity"]
    assert [int(r["label"]) for r in meta] == ds.labels.tolist()
    assert {p.parent.name for p in out.rglob("*.png")} <= set(BASIC_EXPRESSIONS)
    assert len(list(out.rglob("*.png"))) == 16
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]  # no temporary leftovers
    write_synthetic_dataset(out, 16, size=32, num_identities=4, seed=3, usage="PublicTest")  # rerun is fine
    assert len(list(out.rglob("*.png"))) == 16


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda: SyntheticFaces(0), "num_images"),
        (lambda: SyntheticFaces(-3), "num_images"),
        (lambda: SyntheticFaces(5, size=31), "size"),
        (lambda: SyntheticFaces(5, num_identities=0), "num_identities"),
        (lambda: SyntheticFaces(5, seed=-1), "seed"),
        (lambda: SyntheticFaces(5, identity_offset=-1), "identity_offset"),
        (lambda: render_face(0, 1, 1.5, _rng(0)), "intensity"),
        (lambda: render_face(0, 1, -0.1, _rng(0)), "intensity"),
        (lambda: render_face(0, 1, float("nan"), _rng(0)), "intensity"),
        (lambda: render_face(0, 7, 0.5, _rng(0)), "label"),
        (lambda: render_face(-1, 1, 0.5, _rng(0)), "identity"),
        (lambda: render_face(0, 1, 0.5, _rng(0), size=16), "size"),
        (lambda: SyntheticFaces(5, expression_gain=0.0), "expression_gain"),
        (lambda: render_face(0, 1, 0.5, _rng(0), expression_gain=float("inf")), "expression_gain"),
        (lambda: face_regions(0, _rng(0), expression_gain=-1.0), "expression_gain"),
        (lambda: write_synthetic_dataset("/nonexistent-never-created", 3, expression_gain=True), "expression_gain"),
        (lambda: write_synthetic_dataset("/nonexistent-never-created", 0), "num_images"),
        (lambda: write_synthetic_dataset("/nonexistent-never-created", 3, usage="a,b"), "usage"),
    ],
)
def test_bad_arguments_raise_frafer_error(call, word):
    with pytest.raises(FraferError, match=word):
        call()
