"""FERPlus crowd-vote targets (frafer.data.fer.crowd) against hand-worked vote counts."""

from __future__ import annotations

import numpy as np
import pytest

from frafer.data.fer.crowd import (
    CROWD_MODES,
    VOTE_COLUMNS,
    clean_votes,
    crowd_target,
    crowd_targets,
    draw_label,
    majority_label,
    votes_from_ferplus,
)
from frafer.data.fer.dataset import NO_LABEL, FERSample


def votes(**counts: float) -> np.ndarray:
    """A (10,) vote vector in VOTE_COLUMNS order from keyword counts, e.g. votes(happy=6, neutral=4)."""
    v = np.zeros(len(VOTE_COLUMNS))
    for name, count in counts.items():
        v[VOTE_COLUMNS.index(name)] = count
    return v


def dist(num_classes: int = 8, **shares: float) -> np.ndarray:
    """A (num_classes,) target from keyword shares."""
    t = np.zeros(num_classes)
    for name, share in shares.items():
        t[VOTE_COLUMNS.index(name)] = share
    return t


def check(vote_counts, mode, expected, num_classes=8):
    got = crowd_target(vote_counts, mode, num_classes)
    if expected is None:
        assert got is None
    else:
        assert got is not None and got.shape == (num_classes,)
        np.testing.assert_allclose(got, expected, atol=1e-12)


# --- cleaning -------------------------------------------------------------------------------------------------


def test_single_votes_are_zeroed():
    raw = votes(neutral=1, happy=5, sad=1, anger=1, unknown=1, not_face=1)
    np.testing.assert_array_equal(clean_votes(raw), votes(happy=5))


def test_cleaning_happens_before_the_majority_share():
    # Raw share of happy is 5/10 (no majority); after zeroing the five single votes it is 5/5.
    raw = votes(neutral=1, happy=5, sad=1, surprise=1, fear=1, anger=1)
    check(raw, "majority", dist(happy=1.0))
    assert majority_label(raw) == 1


def test_bad_vote_vectors_and_modes_raise():
    with pytest.raises(ValueError, match="10 non-negative"):
        clean_votes(np.ones(8))
    with pytest.raises(ValueError, match="non-negative"):
        clean_votes(votes(happy=-2))
    with pytest.raises(ValueError, match="unknown crowd-label mode"):
        crowd_target(votes(happy=10), "soft")
    with pytest.raises(ValueError, match="7 or 8"):
        crowd_target(votes(happy=10), "majority", num_classes=6)


def test_all_single_votes_leave_nothing():
    raw = votes(neutral=1, happy=1, sad=1, surprise=1, fear=1, disgust=1, anger=1, contempt=1, unknown=1)
    for mode in CROWD_MODES:
        check(raw, mode, None)


# --- majority -------------------------------------------------------------------------------------------------


def test_majority_keeps_more_than_half_and_drops_exactly_half():
    check(votes(happy=6, neutral=4), "majority", dist(happy=1.0))
    check(votes(happy=5, neutral=5), "majority", None)
    check(votes(happy=5, neutral=3, sad=2), "majority", None)
    assert majority_label(votes(happy=5, neutral=5)) == -1
    assert majority_label(votes(surprise=7, fear=3)) == 3


# --- multilabel -----------------------------------------------------------------------------------------------


def test_multilabel_accepts_classes_at_thirty_percent_or_more():
    # anger's single vote is zeroed → total 9, threshold 2.7: happy (4) and surprise (3) accepted, sad (2) not.
    check(votes(happy=4, surprise=3, sad=2, anger=1), "multilabel", dist(happy=4 / 7, surprise=3 / 7))
    # Exactly 30 % is accepted: 3/10 each for happy and sad.
    check(votes(happy=3, sad=3, neutral=2, fear=2), "multilabel", dist(happy=0.5, sad=0.5))


def test_multilabel_drops_when_accepted_classes_hold_half_or_less():
    # Threshold 3.3 of 11: nothing accepted.
    check(votes(happy=3, sad=2, surprise=2, fear=2, anger=2), "multilabel", None)
    # anger zeroed → total 9, threshold 2.7: happy (3) accepted alone holds 3/9 ≤ 50 %.
    check(votes(happy=3, sad=2, surprise=2, fear=2, anger=1), "multilabel", None)


def test_multilabel_strips_an_accepted_unknown_but_drops_an_unknown_top():
    check(votes(happy=5, unknown=3, sad=2), "multilabel", dist(happy=1.0))
    check(votes(unknown=5, happy=3, sad=2), "multilabel", None)


# --- probability / crossentropy truncation --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["probability", "crossentropy"])
def test_truncation_takes_top_classes_until_three_quarters(mode):
    # 5/10 < 75 %, then 8/10 ≥ 75 %: sad (2) is left out.
    check(votes(happy=5, surprise=3, sad=2), mode, dist(happy=5 / 8, surprise=3 / 8))
    # A single class that already covers 75 % is taken alone.
    check(votes(neutral=8, sad=2), mode, dist(neutral=1.0))


@pytest.mark.parametrize("mode", ["probability", "crossentropy"])
def test_truncation_stops_at_three_classes(mode):
    # Total 40, coverage 30: 10, 19, 27 — three classes reached before 75 %; 27/40 > 50 % so the image stays.
    raw = votes(neutral=10, happy=9, sad=8, surprise=7, fear=6)
    check(raw, mode, dist(neutral=10 / 27, happy=9 / 27, sad=8 / 27))


@pytest.mark.parametrize("mode", ["probability", "crossentropy"])
def test_truncation_takes_ties_together(mode):
    # happy 4/8 < 75 %; sad and surprise tie at 2 and both come in (3 classes, 8/8).
    check(votes(happy=4, sad=2, surprise=2), mode, dist(happy=0.5, sad=0.25, surprise=0.25))


@pytest.mark.parametrize("mode", ["probability", "crossentropy"])
def test_a_tie_making_four_classes_drops_the_image(mode):
    check(votes(happy=4, surprise=2, sad=2, fear=2), mode, None)
    check(votes(happy=3, sad=3, surprise=2, neutral=2), mode, None)


@pytest.mark.parametrize("mode", CROWD_MODES)
def test_unknown_or_not_a_face_on_top_drops_the_image(mode):
    check(votes(unknown=6, happy=4), mode, None)
    check(votes(not_face=8, neutral=2), mode, None)


@pytest.mark.parametrize("mode", ["probability", "crossentropy"])
def test_reaching_unknown_after_an_emotion_stops_without_it(mode):
    # Total 11, coverage 8.25: happy 6, then unknown (3) ends the walk; 6/11 > 50 % keeps the image.
    check(votes(happy=6, unknown=3, sad=2), mode, dist(happy=1.0))
    # Same counts with an emotion instead of unknown: the walk goes on.
    check(votes(happy=6, surprise=3, sad=2), mode, dist(happy=6 / 9, surprise=3 / 9))
    # Unknown tied with the top emotion: the emotion alone (4/10) is not more than half → dropped.
    check(votes(happy=4, unknown=4, sad=2), mode, None)
    # Reaching not-a-face with less than half collected also drops.
    check(votes(happy=5, not_face=3, sad=2), mode, None)


# --- 7 classes ------------------------------------------------------------------------------------------------


def test_seven_classes_drop_contempt_majority_and_renormalise():
    check(votes(contempt=6, neutral=4), "majority", dist(contempt=1.0))
    check(votes(contempt=6, neutral=4), "majority", None, num_classes=7)
    check(votes(contempt=6, neutral=4), "crossentropy", None, num_classes=7)
    raw = votes(happy=5, contempt=3, sad=2)
    check(raw, "crossentropy", dist(happy=5 / 8, contempt=3 / 8))
    check(raw, "crossentropy", dist(7, happy=1.0), num_classes=7)
    check(votes(happy=4, contempt=3, sad=3), "multilabel", dist(7, happy=4 / 7, sad=3 / 7), num_classes=7)


# --- FERPlus column order -------------------------------------------------------------------------------------


def test_votes_from_ferplus_reorders_columns():
    # FERPlus order: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF.
    got = votes_from_ferplus([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    # Canonical order: neutral, happy, sad, surprise, fear, disgust, anger, contempt, unknown, not_face.
    np.testing.assert_array_equal(got, [0, 1, 3, 2, 6, 5, 4, 7, 8, 9])
    np.testing.assert_array_equal(votes_from_ferplus(["0", "0", "0", "7", "3", "0", "0", "0", "0", "0"]),
                                  votes(sad=7, anger=3))
    with pytest.raises(ValueError, match="expected 10 vote counts"):
        votes_from_ferplus([1, 2, 3])


# --- crowd_targets --------------------------------------------------------------------------------------------


def mixed_samples() -> list[FERSample]:
    return [
        FERSample(image=np.zeros((4, 4), np.uint8), label=1, key="a", votes=votes(happy=6, neutral=4)),
        FERSample(image=np.zeros((4, 4), np.uint8), label=NO_LABEL, key="b", votes=votes(unknown=7, sad=3)),
        FERSample(image=np.zeros((4, 4), np.uint8), label=2, key="c"),
        FERSample(image=np.zeros((4, 4), np.uint8), label=NO_LABEL, key="d"),
        FERSample(image=np.zeros((4, 4), np.uint8), label=NO_LABEL, key="e", votes=votes(contempt=8, neutral=2)),
        FERSample(image=np.zeros((4, 4), np.uint8), label=7, key="f"),
        FERSample(image=np.zeros((4, 4), np.uint8), label=NO_LABEL, key="g", votes=votes(happy=5, surprise=5)),
    ]


def test_crowd_targets_on_a_mixed_list_majority():
    kept, targets = crowd_targets(mixed_samples(), "majority", num_classes=8)
    assert kept == [0, 2, 4, 5]  # b: unknown top; d: no label; g: a 5/5 split has no majority
    np.testing.assert_array_equal(targets, np.stack([dist(happy=1), dist(sad=1), dist(contempt=1), dist(contempt=1)]))


def test_crowd_targets_on_a_mixed_list_seven_classes_crossentropy():
    kept, targets = crowd_targets(mixed_samples(), "crossentropy", num_classes=7)
    assert kept == [0, 2, 6]  # e and f are contempt, not trained with 7 classes
    expected = np.stack([dist(7, happy=0.6, neutral=0.4), dist(7, sad=1), dist(7, happy=0.5, surprise=0.5)])
    np.testing.assert_allclose(targets, expected)
    assert targets.shape == (3, 7)


def test_crowd_targets_empty_and_bad_inputs():
    kept, targets = crowd_targets([], "multilabel", 7)
    assert kept == [] and targets.shape == (0, 7)
    no_votes = [FERSample(image=np.zeros((2, 2), np.uint8), label=0, key="x")]
    with pytest.raises(ValueError, match="unknown crowd-label mode"):
        crowd_targets(no_votes, "vote")
    with pytest.raises(ValueError, match="7 or 8"):
        crowd_targets(no_votes, "majority", 10)
    with pytest.raises(ValueError, match="'y' has label 9"):
        crowd_targets([FERSample(image=np.zeros((2, 2), np.uint8), label=9, key="y")], "majority")


# --- draw_label -----------------------------------------------------------------------------------------------


def test_draw_label_is_deterministic_in_seed_epoch_index():
    target = dist(happy=0.5, sad=0.3, surprise=0.2)
    first = [draw_label(target, 7, epoch, 3) for epoch in range(50)]
    again = [draw_label(target, 7, epoch, 3) for epoch in range(50)]
    assert first == again
    assert first != [draw_label(target, 8, epoch, 3) for epoch in range(50)]
    assert first != [draw_label(target, 7, epoch, 4) for epoch in range(50)]
    assert draw_label(dist(fear=1.0), 0, 0, 0) == 4


def test_draw_label_frequencies_match_the_target():
    target = dist(happy=0.5, sad=0.3, surprise=0.2)
    draws = np.array([draw_label(target, 1, epoch, 11) for epoch in range(3000)])
    freq = np.bincount(draws, minlength=8) / len(draws)
    np.testing.assert_allclose(freq, target, atol=0.03)  # 3 σ of a 3000-draw frequency is below 0.03
    assert set(np.unique(draws)) <= {1, 2, 3}


def test_draw_label_rejects_bad_inputs():
    with pytest.raises(ValueError, match="positive sum"):
        draw_label(np.zeros(8), 0, 0, 0)
    with pytest.raises(ValueError, match="non-negative seed"):
        draw_label(dist(happy=1.0), 0, -1, 0)
