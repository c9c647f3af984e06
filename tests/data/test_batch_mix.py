"""Mixup and CutMix on the batch: what each mixed image holds, the share `lam` reports, and the mixed loss by hand."""

import math

import pytest
import torch

from frafer.data.pipelines.batch_mix import cut_box, mix_batch, mixed_loss
from frafer.losses.classification import classification_loss

LN2 = math.log(2)


def constant_images(count: int = 6, size: int = 16) -> torch.Tensor:
    """Image k is the constant k + 1 everywhere: every pixel of a mixed image tells where it came from."""
    return torch.arange(1, count + 1, dtype=torch.float32).view(count, 1, 1, 1).expand(count, 3, size, size).clone()


def test_mixup_blends_each_image_with_its_partner_by_lam():
    torch.manual_seed(0)
    x = torch.rand(5, 3, 8, 8)
    mixed, partner, lam = mix_batch(x, "mixup", 0.4)
    assert sorted(partner.tolist()) == list(range(5)) and 0 <= lam <= 1
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[partner])


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_pastes_one_box_of_the_partner_and_lam_is_the_own_share(seed):
    torch.manual_seed(seed)
    x = constant_images()
    mixed, partner, lam = mix_batch(x, "cutmix", 1.0)
    for k in range(len(x)):
        own = mixed[k] == x[k, 0, 0, 0]
        other = mixed[k] == x[partner[k], 0, 0, 0]
        assert bool((own | other).all())  # nothing but the two images
        if partner[k] != k:
            assert own.float().mean().item() == pytest.approx(lam)
            pasted = torch.nonzero(other[0])  # the pasted pixels form one axis-aligned box
            if len(pasted):
                (top, left), (bottom, right) = pasted.min(0).values, pasted.max(0).values + 1
                assert len(pasted) == (bottom - top) * (right - left)


def test_the_cut_box_has_the_drawn_area_when_it_fits_and_is_clipped_at_the_edges():
    torch.manual_seed(1)
    boxes = [cut_box(40, 40, 0.75) for _ in range(200)]
    areas = [(b - t) * (r - l) for t, b, l, r in boxes]
    assert max(areas) == 400 and min(areas) < 400  # 20 × 20 = a quarter, fewer pixels where an edge clips it
    assert all(0 <= t <= b <= 40 and 0 <= l <= r <= 40 for t, b, l, r in boxes)
    t, b, l, r = cut_box(40, 40, 1.0)
    assert (b - t) * (r - l) == 0


def test_mixed_loss_by_hand():
    # logits giving probabilities (1/4, 1/2, 1/4): own class 1 costs ln 2, the partner's class 0 costs ln 4.
    logits = torch.log(torch.tensor([[0.25, 0.5, 0.25], [0.25, 0.5, 0.25]]))
    targets, partner = torch.tensor([1, 0]), torch.tensor([1, 0])
    loss = mixed_loss(classification_loss, logits, targets, partner, 0.25)
    # row 0: 0.25·ln2 + 0.75·ln4 = 1.75 ln2; row 1 (own 0, partner 1): 0.25·ln4 + 0.75·ln2 = 1.25 ln2
    assert loss.item() == pytest.approx(1.5 * LN2, abs=1e-6)


def test_bad_mix_settings_are_refused():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="unknown mix 'blend'"):
        mix_batch(x, "blend", 1.0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        mix_batch(x, "cutmix", 0.0)
