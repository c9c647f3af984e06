"""Trunks in torchvision's layout, FRA's shapes and heatmaps, the momentum update, BYOL's missing local branch."""

import pytest
import torch
import torchvision

from frafer.models.backbones import build_trunk
from frafer.models.fra import FRA, region_pool
from frafer.models.heads import sine_position_encoding
from tests.conftest import tiny_model_config


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_trunk_keys_match_torchvision(arch):
    ours = build_trunk(arch).state_dict()
    theirs = getattr(torchvision.models, arch)().state_dict()
    assert set(ours) == set(theirs) - {"fc.weight", "fc.bias"}
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_slim_resnet50_blocks_and_output():
    trunk = build_trunk("resnet50_slim")
    assert [len(getattr(trunk, f"layer{i}")) for i in range(1, 5)] == [3, 4, 4, 2]
    custom = build_trunk("resnet50", blocks=[1, 1, 2, 1])
    assert [len(getattr(custom, f"layer{i}")) for i in range(1, 5)] == [1, 1, 2, 1]
    out = trunk(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 2048, 2, 2)


def test_remove_maxpool_halves_the_output_stride():
    assert build_trunk("resnet18", width=8, remove_maxpool=True)(torch.randn(1, 3, 64, 64)).shape == (1, 64, 4, 4)
    assert build_trunk("resnet18", width=8)(torch.randn(1, 3, 64, 64)).shape == (1, 64, 2, 2)


def test_sine_position_encoding_is_distinct_per_cell():
    pe = sine_position_encoding(3, 4, 16)
    assert pe.shape == (12, 16)
    assert torch.cdist(pe, pe).add(torch.eye(12)).min() > 1e-3


def test_fra_shapes_heatmaps_and_shared_masks(tiny_cfg):
    torch.manual_seed(0)
    model = FRA(tiny_cfg)
    x1, x2 = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)
    out = model(x1, x2)
    n, d = tiny_cfg.num_queries, tiny_cfg.proj_dim
    assert out["pred_global"][0].shape == (3, d) and out["target_global"][1].shape == (3, d)
    assert out["pred_regions"][0].shape == (3, n, d) and out["online_scores"][0].shape == (3, n, 2, 2)
    heat = out["online_heatmaps"][0]
    assert torch.allclose(heat.sum(dim=1), torch.full((3, 2, 2), 1 + n * 1e-7), atol=1e-5)
    assert not out["target_global"][0].requires_grad and out["pred_global"][0].requires_grad
    features = model.online.trunk(x1)
    q = model.online.mask_embeddings(features)
    assert torch.allclose(q[0], q[2])  # shared: one set of masks for the whole batch
    per_image = FRA(tiny_model_config(shared_masks=False)).online
    per_image.load_state_dict(model.online.state_dict())
    q_own = per_image.mask_embeddings(features)
    assert not torch.allclose(q_own[0], q_own[2]) and torch.allclose(q_own.mean(0), q[0], atol=1e-5)


def test_heatmap_temperature_sharpens():
    torch.manual_seed(0)
    net = FRA(tiny_model_config()).online.eval()
    f = net.trunk(torch.randn(2, 3, 32, 32))
    soft = net.region_maps(f).heatmaps
    net.temperature = 0.1
    sharp = net.region_maps(f).heatmaps
    assert sharp.max(dim=1).values.mean() > soft.max(dim=1).values.mean()


def test_region_pool_is_a_weighted_mean():
    heat = torch.zeros(1, 2, 2, 2)
    heat[0, 0, 0, 0] = heat[0, 0, 1, 1] = 1.0  # region 0: two pixels
    heat[0, 1] = 1.0  # region 1: all pixels
    feats = torch.arange(8.0).view(1, 2, 2, 2)  # C=2
    pooled = region_pool(heat, feats)
    assert torch.allclose(pooled[0, 0], torch.tensor([1.5, 5.5]))
    assert torch.allclose(pooled[0, 1], feats.mean(dim=(2, 3))[0])


def test_momentum_update(tiny_cfg):
    model = FRA(tiny_cfg)
    with torch.no_grad():
        for p in model.online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.momentum.parameters()]
    model.update_momentum(0.9)
    for b, p, o in zip(before, model.momentum.parameters(), model.online.parameters(), strict=True):
        assert torch.allclose(p, 0.9 * b + 0.1 * o)


def test_byol_builds_no_local_branch(tiny_cfg):
    model = FRA(tiny_cfg, local=False)
    assert model.local_predictor is None and not hasattr(model.online, "decoder")
    out = model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert set(out) == {"pred_global", "target_global"}
