"""Schedules and LARS: the per-step momentum and learning rate, which parameters LARS adapts, one step by hand."""

import math

import pytest
import torch
from torch import nn

from frafer.config.schema import OptimConfig
from frafer.models.fra_networks import FRA
from frafer.optim import LARS, build_pretrain_optimizer, lr_at, momentum_at, schedule_lr, split_decay_groups


def test_momentum_schedule():
    assert momentum_at(0, 100) == pytest.approx(0.996)
    assert momentum_at(50, 100) == pytest.approx(0.998)
    assert momentum_at(100, 100) == pytest.approx(1.0)
    values = [momentum_at(k, 100) for k in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))


def test_lr_schedule_warmup_then_cosine():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0, min_lr=0.01) == pytest.approx(0.01)


def test_lars_groups_exclude_biases_and_norms_by_module_type(tiny_cfg):
    model = FRA(tiny_cfg)
    adapted, excluded = split_decay_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    ex = {names[id(p)] for p in excluded}
    ad = {names[id(p)] for p in adapted}
    assert "online.trunk.bn1.weight" in ex and "online.trunk.layer1.0.bn2.bias" in ex
    assert "online.trunk.layer2.0.downsample.1.weight" in ex  # a BatchNorm that no 'bn' substring would catch
    assert "online.global_projector.net.1.weight" in ex  # BatchNorm1d inside an MLP
    assert "online.decoder.layers.0.norm1.weight" in ex and "online.decoder.norm.bias" in ex  # its LayerNorms
    assert "online.decoder.input_proj.bias" in ex and "online.decoder.mask_mlp.4.bias" in ex
    assert "online.decoder.layers.0.self_attn.in_proj_bias" in ex  # not a module's `bias`, a bias all the same
    assert "online.decoder.layers.0.cross_attn.in_proj_weight" in ad
    assert "online.trunk.conv1.weight" in ad and "online.decoder.queries" in ad
    assert "global_predictor.net.0.weight" in ad
    assert not any(n.startswith("momentum.") for n in ex | ad)  # the momentum network is never optimised


def test_lars_step_by_hand():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ‖w‖ = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w]}, {"params": [b], "lars": False, "weight_decay": 0.0}],
               lr=0.1, weight_decay=0.01, momentum=0.9, eta=0.001)
    w.grad = torch.tensor([0.0, 2.0])  # ‖g‖ = 2
    b.grad = torch.tensor([0.5])
    opt.step()
    trust = 0.001 * 5 / (2 + 0.01 * 5)
    update = (torch.tensor([0.0, 2.0]) + 0.01 * torch.tensor([3.0, 4.0])) * trust
    assert torch.allclose(w.detach(), torch.tensor([3.0, 4.0]) - 0.1 * update)
    assert b.item() == pytest.approx(1.0 - 0.1 * 0.5)  # plain SGD: no decay, no trust ratio
    w.grad = torch.tensor([0.0, 2.0])
    b.grad = torch.tensor([0.5])
    opt.step()
    assert b.item() == pytest.approx(1.0 - 0.1 * 0.5 - 0.1 * (0.9 * 0.5 + 0.5))  # momentum buffer


@pytest.mark.parametrize("lr_in_buffer", [True, False])
def test_lars_buffer_across_an_lr_change(lr_in_buffer):
    """Gradient 1 on an excluded parameter, lr 0.5 then 1.0, momentum 0.9. Official (lr in the buffer):
    v₁ = 0.5, v₂ = 0.9·0.5 + 1.0 = 1.45. SGD form: v₁ = 1, v₂ = 1.9, step lr·v₂ = 1.9."""
    b = nn.Parameter(torch.zeros(1))
    opt = LARS([{"params": [b], "lars": False, "weight_decay": 0.0}], lr=0.5, momentum=0.9,
               lr_in_buffer=lr_in_buffer)
    b.grad = torch.ones(1)
    opt.step()
    assert b.item() == pytest.approx(-0.5)
    opt.param_groups[0]["lr"] = 1.0
    b.grad = torch.ones(1)
    opt.step()
    second = 1.45 if lr_in_buffer else 1.9
    assert b.item() == pytest.approx(-0.5 - second)


@pytest.mark.parametrize("wd", [1e-6, 0.0])
def test_weight_decay_with_a_vanishing_gradient_shrinks_by_lr_eta_per_step(wd):
    """Why FRA's facial queries died in docs/results.md's region study: once a tensor's gradient is far below
    wd·‖w‖, the trust ratio turns LARS's weight decay into a step of lr·η·w, however small wd is: the tensor
    shrinks by the factor (1 − lr·η) a step (momentum 0 here) and, as every LARS step scales with ‖w‖, never
    recovers. Without weight decay the same tiny gradient only turns the tensor (‖w‖ does not fall)."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(8, 16))
    start = w.detach().norm().item()
    opt = LARS([w], lr=0.5, weight_decay=wd, momentum=0.0, eta=0.01)
    for _ in range(100):
        w.grad = 1e-12 * torch.randn(8, 16)
        opt.step()
    ratio = w.detach().norm().item() / start
    if wd:
        assert ratio == pytest.approx((1 - 0.5 * 0.01) ** 100, rel=1e-3)  # 0.606 after 100 steps
    else:
        assert ratio >= 1.0


@pytest.mark.parametrize("optimizer", ["lars", "sgd"])
def test_weight_decay_scope_trunk_decays_the_trunk_alone(tiny_cfg, optimizer):
    """optim.weight_decay_scope=trunk: the trunk's weights keep the configured decay, every other trained weight
    (projectors, predictors, the facial queries) takes none; biases and norms stay excluded under LARS."""
    model = FRA(tiny_cfg)
    trained = nn.ModuleList([model.online, model.global_predictor, model.local_predictor])
    names = {id(p): n for n, p in model.named_parameters()}
    for scope in ("all", "trunk"):
        o = OptimConfig(optimizer=optimizer, weight_decay=1e-4, weight_decay_scope=scope)
        opt = build_pretrain_optimizer(o, trained, lr=0.1, trunk=model.online.trunk)
        decay = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        assert len(decay) == sum(1 for _ in trained.parameters())  # every trained tensor, once
        assert decay["online.trunk.conv1.weight"] == 1e-4
        assert decay["online.decoder.queries"] == (1e-4 if scope == "all" else 0.0)
        assert decay["global_predictor.net.0.weight"] == (1e-4 if scope == "all" else 0.0)
        assert decay["online.trunk.bn1.weight"] == (0.0 if optimizer == "lars" else 1e-4)
        assert all(g["base_lr"] == 0.1 for g in opt.param_groups)


def test_queries_exempt_from_weight_decay_survive_a_vanishing_gradient(tiny_cfg):
    """The point of the trunk scope: under weight decay the queries, once their gradient fades, no longer shrink
    by lr·η a step (the mechanism of the test above), while the trunk's weights still decay."""
    torch.manual_seed(0)
    model = FRA(tiny_cfg)
    trained = nn.ModuleList([model.online, model.global_predictor, model.local_predictor])
    queries, conv = model.online.decoder.queries, model.online.trunk.conv1.weight
    start = queries.detach().norm().item(), conv.detach().norm().item()
    o = OptimConfig(weight_decay=1e-4, weight_decay_scope="trunk", lars_eta=0.01, lars_momentum=0.0)
    opt = build_pretrain_optimizer(o, trained, lr=0.5, trunk=model.online.trunk)
    for _ in range(50):
        for p in trained.parameters():
            p.grad = 1e-12 * torch.randn_like(p)
        opt.step()
    assert queries.detach().norm().item() >= start[0]
    assert conv.detach().norm().item() / start[1] == pytest.approx((1 - 0.5 * 0.01) ** 50, rel=1e-3)


def test_trust_ratio_is_one_for_zero_weights():
    w = nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=1.0, weight_decay=0.0, momentum=0.0)
    w.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(w.detach(), -torch.ones(3))
    assert math.isfinite(w.sum().item())


def test_schedule_lr_moves_every_group_from_its_own_peak():
    # one schedule for every loop: a trunk group peaking at 1.0 and a head group at 0.1, min_lr 0.01
    trunk, head = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [trunk], "base_lr": 1.0}, {"params": [head], "base_lr": 0.1}], lr=1.0)
    assert schedule_lr(opt, 0, 100, 10, min_lr=0.01) == pytest.approx(0.01 + 0.99 * 0.1)  # warm-up step 1 of 10
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01 + 0.09 * 0.1)
    assert schedule_lr(opt, 55, 100, 10, min_lr=0.01) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way down
    assert schedule_lr(opt, 100, 100, 10, min_lr=0.01) == pytest.approx(0.01)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.01)
