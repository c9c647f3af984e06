"""FER losses (frafer.losses.classification) against values worked out by hand.

The logits [0, ln 2, 0] have softmax [1/4, 1/2, 1/4], so every loss below is a multiple of ln 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from frafer.data.fer.crowd import CROWD_MODES
from frafer.losses.classification import classification_loss, crowd_loss, multilabel_loss, soft_cross_entropy

LN2 = math.log(2.0)


def quarter_half_quarter(batch: int = 1) -> torch.Tensor:
    return torch.tensor([[0.0, LN2, 0.0]]).repeat(batch, 1)


def test_classification_loss_by_hand():
    logits = quarter_half_quarter(2)
    assert classification_loss(logits, torch.tensor([1, 0])).item() == pytest.approx((LN2 + 2 * LN2) / 2, abs=1e-6)


def test_label_smoothing_by_hand():
    # ε = 0.3 over 3 classes: target 0.7·onehot(1) + 0.1 each → 0.7·ln2 + 0.1·(ln4 + ln2 + ln4) = 1.2·ln2.
    loss = classification_loss(quarter_half_quarter(), torch.tensor([1]), label_smoothing=0.3)
    assert loss.item() == pytest.approx(1.2 * LN2, abs=1e-6)


def test_soft_cross_entropy_by_hand_and_equal_to_ce_for_one_hot():
    logits = quarter_half_quarter()
    assert soft_cross_entropy(logits, torch.tensor([[0.5, 0.5, 0.0]])).item() == pytest.approx(1.5 * LN2, abs=1e-6)
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 3, 1, 1, 2])
    one_hot = torch.nn.functional.one_hot(labels, 4).double()  # float64 targets come from numpy
    assert torch.allclose(soft_cross_entropy(logits, one_hot), classification_loss(logits, labels), atol=1e-6)


def test_multilabel_loss_by_hand():
    logits = quarter_half_quarter(2)
    accepted = torch.tensor([[True, True, False], [True, False, True]])
    # row 0: −log max(1/4, 1/2) = ln2; row 1: −log max(1/4, 1/4) = 2·ln2.
    assert multilabel_loss(logits, accepted).item() == pytest.approx(1.5 * LN2, abs=1e-6)
    assert multilabel_loss(logits, accepted.float()).item() == pytest.approx(1.5 * LN2, abs=1e-6)


def test_multilabel_loss_equals_ce_with_one_accepted_class():
    torch.manual_seed(1)
    logits = torch.randn(6, 8)
    labels = torch.tensor([0, 7, 3, 3, 5, 1])
    accepted = torch.nn.functional.one_hot(labels, 8)
    assert torch.allclose(multilabel_loss(logits, accepted), classification_loss(logits, labels), atol=1e-6)


def test_multilabel_loss_gradient_reaches_only_the_best_accepted_class():
    logits = quarter_half_quarter().requires_grad_()
    multilabel_loss(logits, torch.tensor([[True, True, False]])).backward()
    # d(−log p_1)/dz = p − e_1 = [1/4, −1/2, 1/4]
    assert torch.allclose(logits.grad, torch.tensor([[0.25, -0.5, 0.25]]), atol=1e-6)


def test_multilabel_loss_is_stable_for_huge_logits_and_rejects_empty_rows():
    logits = torch.tensor([[1000.0, 0.0, -1000.0]])
    assert multilabel_loss(logits, torch.tensor([[False, False, True]])).item() == pytest.approx(2000.0, rel=1e-6)
    with pytest.raises(ValueError, match=r"rows \[1\] accept no class"):
        multilabel_loss(quarter_half_quarter(2), torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="same shape"):
        multilabel_loss(quarter_half_quarter(2), torch.ones(2, 4, dtype=torch.bool))


def test_crowd_loss_dispatches_each_mode_by_hand():
    logits = quarter_half_quarter()
    distribution = torch.tensor([[0.4, 0.0, 0.6]])
    # majority: CE on argmax (class 2) = ln4
    assert crowd_loss(logits, distribution, "majority").item() == pytest.approx(2 * LN2, abs=1e-6)
    # multilabel: accepted {0, 2} → −log 1/4
    assert crowd_loss(logits, distribution, "multilabel").item() == pytest.approx(2 * LN2, abs=1e-6)
    # crossentropy: 0.4·ln4 + 0.6·ln4
    assert crowd_loss(logits, distribution, "crossentropy").item() == pytest.approx(2 * LN2, abs=1e-6)
    mixed = torch.tensor([[0.5, 0.5, 0.0]])
    assert crowd_loss(logits, mixed, "multilabel").item() == pytest.approx(LN2, abs=1e-6)
    assert crowd_loss(logits, mixed, "crossentropy").item() == pytest.approx(1.5 * LN2, abs=1e-6)
    # probability: CE on the drawn one-hot label
    drawn = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    assert crowd_loss(logits, drawn, "probability").item() == pytest.approx(LN2, abs=1e-6)


def test_crowd_label_smoothing_by_hand():
    logits, eps = quarter_half_quarter(), 0.3
    # crossentropy: the votes [0.4, 0, 0.6] smoothed to [0.38, 0.1, 0.52] → (0.38·2 + 0.1 + 0.52·2)·ln2 = 1.9·ln2
    votes = torch.tensor([[0.4, 0.0, 0.6]])
    assert crowd_loss(logits, votes, "crossentropy", eps).item() == pytest.approx(1.9 * LN2, abs=1e-6)
    # majority (class 2): 0.7·ln4 + 0.1·(ln4 + ln2 + ln4) = 1.9·ln2; probability (drawn class 1): 1.2·ln2
    assert crowd_loss(logits, votes, "majority", eps).item() == pytest.approx(1.9 * LN2, abs=1e-6)
    drawn = torch.tensor([[0.0, 1.0, 0.0]])
    assert crowd_loss(logits, drawn, "probability", eps).item() == pytest.approx(1.2 * LN2, abs=1e-6)
    with pytest.raises(ValueError, match="no target to smooth"):
        crowd_loss(logits, votes, "multilabel", eps)


def test_crowd_loss_rejects_bad_modes_and_undrawn_probability_targets():
    logits = quarter_half_quarter()
    with pytest.raises(ValueError, match="unknown crowd-label mode"):
        crowd_loss(logits, torch.tensor([[0.0, 1.0, 0.0]]), "vote")
    with pytest.raises(ValueError, match="one-hot"):
        crowd_loss(logits, torch.tensor([[0.4, 0.0, 0.6]]), "probability")
    with pytest.raises(ValueError, match="same shape"):
        crowd_loss(logits, torch.tensor([0.0, 1.0, 0.0]), "majority")


@pytest.mark.parametrize("mode", CROWD_MODES)
def test_every_mode_gives_finite_nonzero_gradients(mode):
    torch.manual_seed(2)
    logits = (3 * torch.randn(4, 8)).requires_grad_()
    if mode in ("majority", "probability"):
        target = torch.nn.functional.one_hot(torch.tensor([0, 7, 2, 2]), 8).float()
    else:
        target = torch.zeros(4, 8)
        target[0, [0, 1]] = torch.tensor([0.6, 0.4])
        target[1, [3, 5, 6]] = torch.tensor([0.5, 0.25, 0.25])
        target[2, 7] = 1.0
        target[3, [2, 4]] = 0.5
    loss = crowd_loss(logits, target, mode)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert torch.allclose(logits.grad.sum(dim=1), torch.zeros(4), atol=1e-6)  # softmax gradients sum to 0 per row


def test_losses_run_in_float32_under_half_precision_logits():
    logits = quarter_half_quarter().half()
    loss = crowd_loss(logits, torch.tensor([[0.5, 0.5, 0.0]]), "crossentropy")
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(1.5 * LN2, abs=1e-3)
