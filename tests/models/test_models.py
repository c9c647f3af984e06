"""Trunks in torchvision's layout, FRA's shapes and heatmaps, the momentum update, BYOL's missing local branch."""

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from frafer.methods import get_method
from frafer.methods.base import update_momentum
from frafer.models.backbones import build_trunk
from frafer.models.fra_networks import FRA, region_pool
from frafer.models.mlp import MLP
from frafer.models.query_decoder import QueryDecoder, sine_position_encoding
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


def test_sine_position_encoding_is_detrs_by_hand():
    # dim 8: 4 channels per axis; frequencies 10000^(0/4), 10000^(0/4), 10000^(2/4), 10000^(2/4) = 1, 1, 100, 100.
    pe = sine_position_encoding(2, 3, 8).reshape(2, 3, 8)
    y1 = 2 / (2 + 1e-6) * 2 * math.pi  # the second row: (i + 1) / (h + eps) · 2π
    x0 = 1 / (3 + 1e-6) * 2 * math.pi  # the first column
    expected = torch.tensor([math.sin(y1), math.cos(y1), math.sin(y1 / 100), math.cos(y1 / 100),
                             math.sin(x0), math.cos(x0), math.sin(x0 / 100), math.cos(x0 / 100)])
    assert torch.allclose(pe[1, 0], expected, atol=1e-6)


def _attention(mha, q, k, v):
    """Multi-head attention written out: per-head softmax(q·kᵀ/√d)·v, then the output projection."""
    d = q.shape[-1]
    wq, wk, wv = mha.in_proj_weight.split(d)
    bq, bk, bv = mha.in_proj_bias.split(d)
    heads = mha.num_heads

    def split(x):  # (B, L, D) → (B, heads, L, D/heads)
        return x.reshape(x.shape[0], x.shape[1], heads, d // heads).transpose(1, 2)

    qh, kh, vh = split(F.linear(q, wq, bq)), split(F.linear(k, wk, bk)), split(F.linear(v, wv, bv))
    weights = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
    out = (weights @ vh).transpose(1, 2).reshape(q.shape)
    return mha.out_proj(out)


def test_query_decoder_follows_detrs_equations():
    """tgt₀ = 0; per layer: t = LN(t + SA(t+q, t+q, t)); t = LN(t + CA(t+q, m+p, m)); t = LN(t + FFN(t));
    then a final LN and the mask MLP (q = the queries, m = the projected memory, p = its sine encoding)."""
    torch.manual_seed(0)
    dec = QueryDecoder(in_channels=6, dim=16, out_dim=12, num_queries=5, layers=2, heads=4, ffn_dim=20,
                       dropout=0.0).eval()
    features = torch.randn(3, 6, 4, 3)
    memory = dec.input_proj(features).flatten(2).transpose(1, 2)  # (3, 12, 16)
    pos = sine_position_encoding(4, 3, 16)
    q = dec.queries.expand(3, -1, -1)
    t = torch.zeros(3, 5, 16)
    for layer in dec.layers:
        t = layer.norm1(t + _attention(layer.self_attn, t + q, t + q, t))
        t = layer.norm2(t + _attention(layer.cross_attn, t + q, memory + pos, memory))
        t = layer.norm3(t + layer.ffn(t))
    expected = dec.mask_mlp(dec.norm(t))
    assert torch.allclose(dec(features), expected, atol=1e-5)


def test_projector_and_predictor_linears_have_no_bias():
    mlp = MLP(8, 16, 4)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 and all(m.bias is None for m in linears)


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
    update_momentum(get_method("fra").momentum_pairs(model), 0.9)
    for b, p, o in zip(before, model.momentum.parameters(), model.online.parameters(), strict=True):
        assert torch.allclose(p, 0.9 * b + 0.1 * o)


def test_byol_builds_no_local_branch(tiny_cfg):
    model = FRA(tiny_cfg, local=False)
    assert model.local_predictor is None and not hasattr(model.online, "decoder")
    out = model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    assert set(out) == {"pred_global", "target_global"}


def test_training_and_inference_compute_the_same_region_maps():
    """One function makes the heatmaps: the region model kept for predict reproduces, on the same weights, the maps
    the training network makes in eval mode (less the epsilon that training adds before pooling)."""
    from frafer.models.fra_networks import Network
    from frafer.models.region_model import RegionModel

    torch.manual_seed(0)
    cfg = tiny_model_config()
    net = Network(cfg, local=True)
    net.train()
    net(torch.randn(4, 3, 32, 32))  # one training batch stores the mask prototypes
    net.eval()
    regions = RegionModel(net.trunk, net.dense_projector, None, net.mask_prototypes.clone(),
                          cfg.heatmap_temperature).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        trained = net.region_maps(net.trunk(x)).heatmaps - cfg.heatmap_eps
        drawn = regions(x)
    assert torch.allclose(drawn, trained, atol=1e-6)
    assert torch.allclose(drawn.sum(1), torch.ones(3, *drawn.shape[2:]), atol=1e-5)
