"""DMUE fine-tuning: each loss term on a hand-computed case, the mined distributions, the auxiliary branches'
isolation from their own class, the pairwise skip, deployment as a plain classifier, and a short run that learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from frafer.artifacts.bundle import load_bundle
from frafer.config.loader import build_config
from frafer.config.schema import DMUEConfig, FinetuneConfig
from frafer.data.fer.splits import prepare_splits
from frafer.data.pipelines.transforms import build_eval_transform
from frafer.data.synthetic.renderer import write_synthetic_dataset
from frafer.errors import FraferError
from frafer.eval.evaluate import evaluate_samples
from frafer.losses.dmue import (
    dmue_loss,
    mined_distribution,
    other_classes,
    ramp_weights,
    similarity_preserving_loss,
    soft_loss,
    to_branch_labels,
    weighted_cross_entropy,
)
from frafer.methods.heads import get_head
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier
from frafer.models.dmue_network import DMUENet, class_similarity, has_pairs
from frafer.train.downstream_common import build_classifier
from frafer.train.finetune import finetune
from tests.conftest import AUG_OFF
from tests.conftest import TINY_FINETUNE as TINY

C = 4


def tiny_network(num_classes: int = C, seed: int = 0) -> DMUENet:
    torch.manual_seed(seed)
    trunk = build_trunk("resnet18", width=4, remove_maxpool=True)
    return DMUENet(FERClassifier(trunk, num_classes), num_classes, dropout=0.0, head_init_std=0.5)


# ----------------------------------------------------------------------------------------------- loss terms


def test_ramp_weights_follow_the_schedule():
    assert ramp_weights(0, 6) == pytest.approx((math.exp(-5), 1.0))
    assert ramp_weights(3, 6) == pytest.approx((math.exp(-1.25), 1.0))
    assert ramp_weights(6, 6) == pytest.approx((1.0, 1.0))
    assert ramp_weights(12, 6) == pytest.approx((1.0, math.exp(-0.25)))


def test_branch_classes_leave_their_own_class_out():
    assert other_classes(3).tolist() == [[1, 2], [0, 2], [0, 1]]
    assert to_branch_labels(torch.tensor([0, 1, 3]), 2).tolist() == [0, 1, 2]


def test_mined_distribution_hand_case_and_invariants():
    # label 1 → its branch ranks classes (0, 2); softmax([0, ln 2]) = (1/3, 2/3) at T = 1
    mined = mined_distribution(torch.tensor([[0.0, math.log(2.0)]]), torch.tensor([1]), 3, temperature=1.0)
    assert mined.tolist()[0] == pytest.approx([1 / 3, 0.0, 2 / 3])
    labels = torch.randint(0, 7, (64,))
    mined = mined_distribution(torch.randn(64, 6, requires_grad=True), labels, 7, temperature=1.2)
    assert not mined.requires_grad
    assert torch.all(mined[torch.arange(64), labels] == 0)
    assert torch.allclose(mined.sum(dim=1), torch.ones(64))
    # a higher temperature flattens the distribution
    logits = torch.tensor([[0.0, 2.0]])
    sharp, flat = (mined_distribution(logits, torch.tensor([0]), 3, t)[0, 2] for t in (1.0, 3.0))
    assert sharp > flat > 0.5


def test_soft_loss_hand_case():
    # softmax = (1/2, 1/4, 1/4); label 0 zeroed and renormalised → (0, 1/2, 1/2); mined (0, 1/3, 2/3)
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    loss = soft_loss(logits, torch.tensor([0]), torch.tensor([[0.0, 1 / 3, 2 / 3]]))
    assert loss.item() == pytest.approx((2 * (1 / 6) ** 2) / 3, rel=1e-5)


def test_weighted_cross_entropy_scales_the_logits():
    logits, labels = torch.randn(5, 4), torch.randint(0, 4, (5,))
    assert weighted_cross_entropy(logits, labels, torch.ones(5)).item() == pytest.approx(
        F.cross_entropy(logits, labels).item(), rel=1e-6)
    assert weighted_cross_entropy(logits, labels, torch.zeros(5)).item() == pytest.approx(math.log(4), rel=1e-6)


def test_class_similarity_hand_case():
    # 2-D features at angles 0°, 90°, 0°, 45°, 180°, 90°; classes 0,0,1,1,2,2
    angles = torch.tensor([0.0, 90.0, 0.0, 45.0, 180.0, 90.0]) * math.pi / 180
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    r = math.sqrt(0.5)
    # sample 0: own class → (sample 1) 0; class 1 → (1 + r)/2; class 2 → (−1 + 0)/2; then min-max over the three
    raw = torch.tensor([0.0, (1 + r) / 2, -0.5])
    expected = (raw - raw.min()) / (raw.max() - raw.min())
    got = class_similarity(features, labels, 3)
    assert got[0].tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    assert torch.all((got >= 0) & (got <= 1))
    assert has_pairs(labels, 3) and not has_pairs(torch.tensor([0, 0, 1, 2, 2]), 3)


def test_similarity_preserving_loss_hand_case():
    # logits' Gram = I; features' Gram = all ones → rows (r, r): MSE = ((1 − r)² + r² + r² + (1 − r)²) / 4
    r = math.sqrt(0.5)
    loss = similarity_preserving_loss(torch.eye(2), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert loss.item() == pytest.approx((2 * (1 - r) ** 2 + 2 * r ** 2) / 4, rel=1e-5)
    same = torch.randn(6, 3)
    assert similarity_preserving_loss(same, same).item() == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------------------------- the network


def shared_input(network: DMUENet, labels: torch.Tensor, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(len(labels), network.classifier.trunk.layer4[0].conv1.in_channels, 4, 4)


def test_total_is_the_weighted_sum_of_its_parts():
    network = tiny_network()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    cfg = DMUEConfig()
    loss, parts = dmue_loss(network.branches(shared_input(network, labels), labels), labels, epoch=2, cfg=cfg)
    w_u, w_d = ramp_weights(2, cfg.switch_epoch)
    expected = w_u * (parts["wce"] + cfg.omega * parts["soft"] + cfg.gamma * parts["sp"]) + w_d * parts["aux"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert parts["pairs"] == 1 and parts["sp"] > 0 and 0 < parts["scale"] < 1


def test_auxiliary_branch_never_trains_on_its_own_class():
    """Branch c's gradients do not change when the class-c samples' inputs are replaced (eval mode: no batch
    statistics couple the samples)."""
    network = tiny_network().eval()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    shared = shared_input(network, labels)

    def branch_grads(inputs, c):
        network.zero_grad()
        loss, _ = dmue_loss(network.branches(inputs, labels), labels, epoch=8, cfg=DMUEConfig())
        loss.backward()
        return [p.grad.clone() for p in [*network.aux_layers[c].parameters(), *network.aux_fc[c].parameters()]]

    for c in range(C):
        before = branch_grads(shared, c)
        changed = shared.clone()
        changed[labels == c] = 10 * torch.randn_like(changed[labels == c])
        after = branch_grads(changed, c)
        assert any(g.abs().sum() > 0 for g in before)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after, strict=True))
        other = (c + 1) % C  # … while another branch does see those samples
        assert not all(torch.allclose(a, b) for a, b in zip(branch_grads(shared, other), branch_grads(changed, other),
                                                             strict=True))


def test_pairwise_terms_train_the_uncertainty_module_and_are_skipped_without_pairs():
    network = tiny_network()
    with_pairs = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    out = network.branches(shared_input(network, with_pairs), with_pairs)
    loss, parts = dmue_loss(out, with_pairs, epoch=8, cfg=DMUEConfig())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.uncertainty.parameters())
    network.zero_grad()
    lonely = torch.tensor([0, 0, 1, 1, 2, 2, 3, 1])  # class 3 has one sample
    out = network.branches(shared_input(network, lonely), lonely)
    loss, parts = dmue_loss(out, lonely, epoch=8, cfg=DMUEConfig())
    loss.backward()
    assert parts["pairs"] == 0 and parts["sp"] == 0 and parts["scale"] == 1
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in network.uncertainty.parameters())


def test_optimiser_trains_every_part_but_the_deployed_head():
    cfg = build_config({}, [*TINY, "model.head=dmue", "data.root=unused"], FinetuneConfig)
    network = tiny_network()
    optimizer = get_head("dmue").optimizer(cfg, network)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    for name, p in network.named_parameters():
        assert (id(p) in trained) == (not name.startswith("classifier.head.")), name


def test_each_branch_keeps_its_own_running_statistics():
    """The deployed target branch's batch-norm statistics are its own features', not a mix over every branch."""
    network = tiny_network().train()
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    shared = shared_input(network, labels)
    with torch.no_grad():
        network.aux_layers[2].apply(lambda m: m.weight.mul_(3.0) if isinstance(m, torch.nn.Conv2d) else None)
        dmue_loss(network.branches(shared, labels), labels, epoch=8, cfg=DMUEConfig())
        target = network.classifier.trunk.layer4(shared).mean(dim=(2, 3))
        aux = network.aux_layers[2](shared).mean(dim=(2, 3))
    momentum = network.norm.momentum
    assert torch.allclose(network.norm.running_mean, momentum * target.mean(0), atol=1e-5)
    assert torch.allclose(network.aux_running_mean[2], momentum * aux.mean(0), atol=1e-5)
    assert not torch.allclose(network.aux_running_mean[2], network.norm.running_mean)


def test_deployed_classifier_equals_the_target_branch():
    network = tiny_network()
    images = torch.randn(8, 3, 32, 32)
    network.train()
    for _ in range(3):  # non-trivial running statistics in the shared batch-norm
        network.norm(torch.randn(8, network.norm.num_features) * 3 + 1)
    network.eval()
    with torch.no_grad():
        branch = network.target_fc(network.norm(network.classifier.features(images)))
        deployed = network.sync_classifier()(images)
    assert torch.allclose(deployed, branch, atol=1e-5)


def test_dmue_refuses_what_it_cannot_train():
    with pytest.raises(FraferError, match="at least 3 classes"):
        tiny_network(num_classes=2)
    cfg = build_config({}, [*TINY, "model.head=dmue", "data.crowd_mode=multilabel", "data.root=unused"],
                       FinetuneConfig)
    with pytest.raises(FraferError, match="crowd_mode=multilabel"):
        get_head("dmue").objective(cfg, FERClassifier(build_trunk("resnet18", width=4), 7), 7)


# ----------------------------------------------------------------------------------------------- a real run


def test_short_dmue_run_learns_and_deploys_like_plain_finetuning(tmp_path):
    """30 steps on 56 synthetic faces, augmentation off: the deployed target branch fits its training faces well
    above chance and above its step-0 accuracy, and its bundle is a plain fine-tuning bundle."""
    root = write_synthetic_dataset(tmp_path / "faces", 56, size=32, num_identities=8, seed=0, usage="Training")
    run = [*TINY, *AUG_OFF, f"data.root={root}", "train.select=last", "train.batch_size=28", "optim.warmup_epochs=0",
           "optim.lr=2e-3"]
    cfg = build_config({}, [*run, "model.head=dmue", "train.epochs=15", "dmue.switch_epoch=3", "dmue.dropout=0"],
                       FinetuneConfig)
    splits = prepare_splits(cfg.data, cfg.train.seed)
    transform = build_eval_transform(32, cfg.aug.mean, cfg.aug.std)

    def train_accuracy(model) -> float:
        return evaluate_samples(model, splits.train, splits.classes, transform, torch.device("cpu"))["top1"]

    model, _ = build_classifier(cfg, len(splits.classes))
    start = train_accuracy(DMUENet(model, len(splits.classes)).eval().sync_classifier())
    assert finetune(cfg, tmp_path / "dmue").stopped == "completed"
    dmue = load_bundle(tmp_path / "dmue" / "model")
    learned = train_accuracy(dmue.model)
    chance = 100.0 / len(splits.classes)
    assert learned > chance + 15 and learned > start + 15, (start, learned)
    assert dmue.info["head"] == "dmue"
    finetune(build_config({}, [*run, "train.epochs=1"], FinetuneConfig), tmp_path / "plain")
    plain = load_bundle(tmp_path / "plain" / "model")
    assert plain.classes == dmue.classes and type(plain.model) is type(dmue.model)
    assert {k: v.shape for k, v in dmue.model.state_dict().items()} == {
        k: v.shape for k, v in plain.model.state_dict().items()}
