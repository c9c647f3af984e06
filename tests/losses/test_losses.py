"""FRA losses against hand-computed values and invariants."""

import math

import pytest
import torch

from frafer.losses.byol_loss import byol_loss, instance_loss, regression
from frafer.losses.fra_loss import diversity, fra_loss, heatmap_sharpness, local_loss, relation_loss, sinkhorn
from frafer.methods.fra import LossConfig


def test_regression_is_two_minus_two_cosine():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    z = torch.tensor([[0.0, 5.0], [2.0, 0.0], [-1.0, 0.0]])
    assert torch.allclose(regression(p, z), torch.tensor([2.0, 0.0, 4.0]))


def test_instance_loss_hand_case():
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert instance_loss(pred, target).item() == pytest.approx((2 - math.sqrt(2)) / 2, abs=1e-6)


def test_local_loss_hand_case_with_decorrelation():
    pred = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, N=2, D=2)
    target = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    matched = (0.0 + (2 - math.sqrt(2))) / 2  # region 0 identical, region 1 at 45°
    # off-diagonal cos²: (m=0, n=1) = 0.5, (m=1, n=0) = 0 → mean_m (1/N) Σ_{n≠m} = (0.25 + 0) / 2
    assert local_loss(pred, target, 0.0).item() == pytest.approx(matched, abs=1e-6)
    assert local_loss(pred, target, 0.02).item() == pytest.approx(matched + 0.02 * 0.125, abs=1e-6)


def test_losses_do_not_backpropagate_into_targets():
    pred = torch.randn(4, 3, 8, requires_grad=True)
    target = torch.randn(4, 3, 8, requires_grad=True)
    local_loss(pred, target).backward()
    assert pred.grad is not None and target.grad is None


def test_sinkhorn_marginals():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(60, 6) * 3, dim=1)  # (P pixels, N regions), unbalanced
    out = sinkhorn(probs, iterations=3)
    assert torch.allclose(out.sum(dim=1), torch.ones(60), atol=1e-5)  # each pixel: a distribution
    uniform = torch.full((6,), 60 / 6)
    assert (out.sum(dim=0) - uniform).abs().max() < (probs.sum(dim=0) - uniform).abs().max()
    balanced = sinkhorn(probs, iterations=200)
    assert torch.allclose(balanced.sum(dim=0), uniform, atol=1e-3)  # each region: an equal share of pixels


def test_relation_loss_hand_case():
    online = torch.tensor([0.1, -0.1]).view(1, 2, 1, 1)  # student logits /0.1 → [1, −1]
    target = torch.zeros(1, 2, 1, 1)  # uniform teacher, unchanged by Sinkhorn
    loss, parts = relation_loss(online, target, 0.1, 0.04, 3, 1.0)
    log_s = torch.log_softmax(torch.tensor([1.0, -1.0]), 0)
    ce = -(0.5 * log_s).sum().item()
    s = log_s.exp()
    me = math.log(2) + (s * s.log()).sum().item()
    assert parts["rel_ce"].item() == pytest.approx(ce, abs=1e-5)
    assert parts["rel_me"].item() == pytest.approx(me, abs=1e-5)
    assert loss.item() == pytest.approx(ce + me, abs=1e-5)


def test_relation_loss_invariant_to_permuting_regions():
    torch.manual_seed(1)
    online, target = torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4)
    perm = torch.randperm(5)
    a, _ = relation_loss(online, target)
    b, _ = relation_loss(online[:, perm], target[:, perm])
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_losses_at_initialisation_with_random_features():
    torch.manual_seed(2)
    n = 8
    pred, target = torch.randn(256, 1024), torch.randn(256, 1024)
    assert instance_loss(pred, target).item() == pytest.approx(2.0, abs=0.05)
    assert local_loss(torch.randn(64, n, 1024), torch.randn(64, n, 1024), 0.0).item() == pytest.approx(2.0, abs=0.05)
    # Cosine scores of random high-dimensional features are near 0: assignments are near uniform.
    scores = lambda: torch.nn.functional.cosine_similarity(  # noqa: E731
        torch.randn(16, n, 1, 1, 2048), torch.randn(16, 1, 4, 4, 2048), dim=-1
    )
    _, parts = relation_loss(scores(), scores())
    assert parts["rel_ce"].item() == pytest.approx(math.log(n), abs=0.05)


def test_diversity_extremes():
    n = 8
    uniform = torch.full((2, n, 3, 3), 1.0 / n)
    assert diversity(uniform).item() == pytest.approx(math.log(n), abs=1e-5)
    one_hot = torch.zeros(2, n, 3, 3)
    one_hot[:, 3] = 1.0
    assert diversity(one_hot + 1e-7).item() == pytest.approx(0.0, abs=1e-4)


def test_heatmap_sharpness_extremes_and_a_hand_case():
    n = 8
    flat = heatmap_sharpness(torch.full((2, n, 3, 3), 1.0 / n))
    assert flat["hm_entropy"].item() == pytest.approx(math.log(n), abs=1e-5)
    assert flat["hm_maxprob"].item() == pytest.approx(1.0 / n, abs=1e-6)
    one_hot = torch.zeros(2, n, 3, 3)
    one_hot[:, 5] = 1.0
    peaked = heatmap_sharpness(one_hot)
    assert peaked["hm_entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert peaked["hm_maxprob"].item() == pytest.approx(1.0)
    # one pixel (0.5, 0.5), one pixel (1, 0): entropy (ln 2 + 0)/2, max-prob (0.5 + 1)/2
    maps = torch.tensor([[[[0.5, 1.0]], [[0.5, 0.0]]]])  # (1, 2, 1, 2)
    half = heatmap_sharpness(maps)
    assert half["hm_entropy"].item() == pytest.approx(math.log(2) / 2, rel=1e-6)
    assert half["hm_maxprob"].item() == pytest.approx(0.75)


def test_fra_loss_logs_sharpness_and_delta_with_the_diversity_term_off():
    out = _outputs()
    _, parts = fra_loss(out, LossConfig(diversity_weight=0.0))
    assert parts["diversity"].item() == pytest.approx(diversity(out["online_heatmaps"][0]).item(), rel=1e-6)
    assert parts["hm_entropy"].item() == pytest.approx(
        heatmap_sharpness(out["online_heatmaps"][0])["hm_entropy"].item(), rel=1e-6)


def _outputs(b=4, n=3, d=8, h=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    heat = torch.softmax(r(b, n, h, h), dim=1)
    return {
        "pred_global": [r(b, d), r(b, d)], "target_global": [r(b, d), r(b, d)],
        "pred_regions": [r(b, n, d), r(b, n, d)], "target_regions": [r(b, n, d), r(b, n, d)],
        "online_scores": [r(b, n, h, h), r(b, n, h, h)], "target_scores": [r(b, n, h, h), r(b, n, h, h)],
        "online_heatmaps": [heat, heat],
    }


def test_fra_loss_combines_parts_as_specified():
    out = _outputs()
    cfg = LossConfig()
    total, parts = fra_loss(out, cfg)
    expected = 0.5 * parts["inst"] + 0.5 * parts["local"] + 0.1 * parts["relation"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    summed, sparts = fra_loss(out, LossConfig(relation_views="sum"))
    assert sparts["relation"].item() == pytest.approx(2 * parts["relation"].item(), rel=1e-6)
    sub, dparts = fra_loss(out, LossConfig(diversity_weight=0.01, diversity_mode="subtract"))
    add, _ = fra_loss(out, LossConfig(diversity_weight=0.01, diversity_mode="add"))
    assert sub.item() == pytest.approx(total.item() - 0.01 * dparts["diversity"].item(), rel=1e-6)
    assert add.item() == pytest.approx(total.item() + 0.01 * dparts["diversity"].item(), rel=1e-6)


def test_byol_is_the_global_term_only():
    out = _outputs()
    byol = {k: out[k] for k in ("pred_global", "target_global")}  # no local outputs needed at all
    total, parts = byol_loss(byol)
    assert set(parts) == {"inst", "loss"}
    by_hand = sum(instance_loss(out["pred_global"][v], out["target_global"][w]) for v, w in ((0, 1), (1, 0)))
    assert total.item() == pytest.approx(by_hand.item())
    # bit for bit FRA's objective without its local terms: the same seed gives the same BYOL run as before
    assert torch.equal(total, fra_loss(byol, LossConfig(lambda_c=1.0, lambda_r=0.0))[0])
