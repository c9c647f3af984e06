"""MoCo v2: InfoNCE by hand, the queue's first-in first-out order, shuffle-BN, and the method's config defaults."""

import math

import pytest
import torch
import torch.nn.functional as F

from frafer.config.loader import load_config
from frafer.errors import FraferError
from frafer.losses.info_nce import info_nce
from frafer.methods.moco_v2 import MocoConfig
from frafer.models.moco import MoCo
from tests.conftest import tiny_model_config


def test_info_nce_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    negatives = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, -1.0]])
    t = 0.5
    # query 0: positive 0.6, negatives 1, -1, 0; query 1: positive 1, negatives 0, 0, -1
    first = -math.log(math.exp(0.6 / t) / (math.exp(0.6 / t) + math.exp(1 / t) + math.exp(-1 / t) + math.exp(0)))
    second = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0) + math.exp(-1 / t)))
    assert info_nce(q, k, negatives, t).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_info_nce_passes_gradient_to_queries_only():
    q = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    k = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    info_nce(q, k, F.normalize(torch.randn(16, 8), dim=1), 0.2).backward()
    assert q.grad.abs().sum() > 0 and k.grad is None


def _moco(queue_size=5, bn_batch=32, dim=4):
    torch.manual_seed(0)
    return MoCo(tiny_model_config(), MocoConfig(dim=dim, hidden_dim=8, queue_size=queue_size, bn_batch=bn_batch))


def test_queue_is_first_in_first_out_and_its_pointer_wraps():
    model = _moco(queue_size=5)
    first, second = torch.arange(12.0).reshape(3, 4), 100 + torch.arange(12.0).reshape(3, 4)
    model.enqueue(first)
    assert torch.equal(model.queue[:3], first) and int(model.queue_ptr) == 3
    model.enqueue(second)  # slots 3, 4, then 0: the oldest key (first[0]) goes
    assert torch.equal(model.queue[3:], second[:2]) and torch.equal(model.queue[0], second[2])
    assert torch.equal(model.queue[1:3], first[1:]) and int(model.queue_ptr) == 1


def test_forward_gives_the_queue_before_this_batch_and_then_enqueues_its_keys():
    model = _moco(queue_size=8, bn_batch=2)
    before = model.queue.clone()
    out = model(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))
    assert torch.equal(out["negatives"], before)
    assert torch.allclose(model.queue[:4], out["key"]) and int(model.queue_ptr) == 4
    assert torch.allclose(out["query"].norm(dim=1), torch.ones(4)) and not out["key"].requires_grad


def test_one_bn_batch_on_one_process_is_warned_about():
    with pytest.warns(UserWarning, match="share one batch-norm batch"):
        _moco(bn_batch=32)(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32))


def test_shuffle_bn_normalises_keys_in_other_batches_than_their_queries():
    """With two BN batches, a key's batch-norm statistics come from a shuffled half, not from its query's half:
    the keys differ from the keys of one whole-batch pass, and they come back in the images' order."""
    x = torch.randn(8, 3, 32, 32)
    model = _moco(bn_batch=4, queue_size=64).train()
    keys = model.keys(x)
    whole = F.normalize(model.momentum(x), dim=1)  # one BN batch of all 8
    assert not torch.allclose(keys, whole, atol=1e-4)
    model.eval()  # running statistics: no batch coupling, so the shuffle must be undone exactly
    assert torch.allclose(model.keys(x), F.normalize(model.momentum(x), dim=1), atol=1e-6)


def test_moco_recipe_defaults_and_their_overrides():
    cfg = load_config(None, ["method=moco_v2", "data.source=synthetic"])
    o = cfg.optim
    assert (o.optimizer, o.base_lr, o.reference_batch, o.scale_lr, o.weight_decay) == ("sgd", 0.03, 256, True, 1e-4)
    assert (o.ema_base, o.ema_final, o.warmup_epochs, cfg.train.sync_bn) == (0.999, 0.999, 0.0, False)
    assert (cfg.moco.dim, cfg.moco.queue_size, cfg.moco.temperature) == (128, 65536, 0.2)
    assert tuple(cfg.aug.blur_p) == (0.5, 0.5) and tuple(cfg.aug.solarize_p) == (0.0, 0.0)
    recipe = load_config(None, ["method=moco_v2", "data.source=synthetic", "optim.base_lr=0.06"])
    assert recipe.optim.base_lr == 0.06  # the recipe wins over the method's default
    assert load_config(None, ["data.source=synthetic"]).optim.optimizer == "lars"  # FRA keeps the schema's defaults


def test_method_config_errors_name_the_problem():
    with pytest.raises(FraferError, match=r"unknown method 'nosuch' \(known: fra, byol, moco_v2\)"):
        load_config(None, ["method=nosuch"])
    with pytest.raises(FraferError, match="'loss.lambda_r'.*method=byol"):
        load_config(None, ["method=byol", "loss.lambda_r=0.2"])
    with pytest.raises(FraferError, match="'moco.queue_size'.*method=fra"):
        load_config(None, ["moco.queue_size=16"])
    with pytest.raises(FraferError, match="that is BYOL; set method: byol"):
        load_config(None, ["loss.lambda_c=1", "loss.lambda_r=0"])
    with pytest.raises(FraferError, match="shuffle-BN"):
        load_config(None, ["method=moco_v2", "train.sync_bn=true"])
