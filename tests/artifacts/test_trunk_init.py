"""Where a downstream trunk comes from: an FRA run, an exported backbone, a torchvision .pth, a fine-tuning run's
bundle, random init; pickles refused; the rescaling of pre-trained conv weights."""

from __future__ import annotations

import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from frafer.artifacts.checkpoint import latest_checkpoint, load_weights, save_weights
from frafer.artifacts.export import export_backbone
from frafer.artifacts.trunk_init import load_trunk, rescale_to_init_norms
from frafer.errors import FraferError
from frafer.models.backbones import build_trunk
from frafer.train.downstream_common import build_classifier
from tests.conftest import equal_weights, ft_with_init
from tests.conftest import finetune_cfg as cfg_for

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------------------------- init sources


def test_init_from_an_fra_run_takes_its_trunk_and_layout(data, fra_run):
    run_dir, _ = fra_run
    online = load_weights(latest_checkpoint(run_dir) / "weights.safetensors")
    expected = {k[len("online.trunk."):]: v for k, v in online.items() if k.startswith("online.trunk.")}
    model, record = build_classifier(ft_with_init(data, run_dir), 7)
    assert equal_weights(model.trunk.state_dict(), expected)
    assert record["layout"] == {"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 8, "remove_maxpool": True}
    assert record["source"] == str(latest_checkpoint(run_dir) / "weights.safetensors")
    assert model.head.in_features == 64 and model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_init_from_an_exported_backbone(data, fra_run, tmp_path):
    run_dir, _ = fra_run
    exported = export_backbone(run_dir)
    expected = {k[len("online.trunk."):]: v for k, v in load_weights(
        latest_checkpoint(run_dir) / "weights.safetensors").items() if k.startswith("online.trunk.")}
    model, record = build_classifier(ft_with_init(data, exported), 7)
    assert equal_weights(model.trunk.state_dict(), expected) and record["layout"]["remove_maxpool"] is True
    # moved away from its run folder, the file's own metadata still says the run had no max-pool
    alone = tmp_path / "elsewhere" / "backbone.safetensors"
    alone.parent.mkdir()
    shutil.copy(exported, alone)
    trunk, record = load_trunk(str(alone), "resnet50", [], 64, False)
    assert record["layout"]["remove_maxpool"] is True and record["layout"]["width"] == 8
    assert equal_weights(trunk.state_dict(), expected)


def test_init_from_a_torchvision_pth(data, tmp_path):
    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "weights" / "resnet18.pth"
    path.parent.mkdir()
    torch.save(reference, path)
    (tmp_path / "config.yaml").write_text("name: some other tool's settings\n")  # not a frafer run: ignored
    trunk, record = load_trunk(str(path), "resnet50", [], 4, True)
    assert record["layout"] == {"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64, "remove_maxpool": True}
    state = trunk.state_dict()
    assert set(state) == {k for k in reference if not k.startswith("fc.")}
    assert all(torch.equal(state[k], reference[k]) for k in state)
    # wrapped in a {"state_dict": …} with a "module." prefix, as DataParallel training scripts save it
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.items()}}, tmp_path / "wrapped.pth")
    trunk, _ = load_trunk(str(tmp_path / "wrapped.pth"), "resnet50", [], 4, False)
    assert torch.equal(trunk.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_init_refuses_pickled_objects_and_missing_paths(data, tmp_path):
    import warnings

    marker = tmp_path / "code-ran"
    torch.save({"conv1.weight": _RunsCode(marker)}, tmp_path / "evil.pth")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(FraferError, match=r"evil\.pth cannot be loaded safely: it holds pickled Python objects") \
                as err:
            build_classifier(ft_with_init(data, tmp_path / "evil.pth"), 7)
    assert not caught  # frafer's own line only, no library warning above it
    assert "never unpickles" in str(err.value) and "safetensors" in str(err.value)
    assert "weights_only" not in str(err.value)  # never the advice to unpickle an untrusted file
    assert not marker.exists()
    (tmp_path / "raw.pth").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(FraferError, match="cannot be loaded safely"):
        load_trunk(str(tmp_path / "raw.pth"), "resnet18", [], 4, False)
    assert not marker.exists()
    (tmp_path / "cut.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FraferError, match="cut.pth cannot be loaded safely: it is not a readable torch file"):
        load_trunk(str(tmp_path / "cut.pth"), "resnet18", [], 4, False)
    missing = tmp_path / "no" / "such" / "run"
    with pytest.raises(FraferError, match=f"model.init {missing}: no such file or folder"):
        build_classifier(ft_with_init(data, missing), 7)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FraferError, match="a folder without checkpoints"):
        load_trunk(str(tmp_path / "empty"), "resnet18", [], 4, False)


def test_init_none_is_random_but_seeded(data, fra_run):
    model, record = build_classifier(cfg_for(data, "model.init=none"), 7)
    again, _ = build_classifier(cfg_for(data, "model.init=none"), 7)
    other, _ = build_classifier(cfg_for(data, "model.init=none", "train.seed=1"), 7)
    assert record["source"] == "none (random init)"
    assert record["layout"] == {"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 4, "remove_maxpool": True}
    assert equal_weights(model.state_dict(), again.state_dict())
    assert not torch.equal(model.trunk.conv1.weight, other.trunk.conv1.weight)


def test_init_from_a_finetuning_run_takes_its_bundle(data, ft_run):
    run_dir, _ = ft_run
    model, record = build_classifier(ft_with_init(data, run_dir), 7)
    bundle = load_weights(run_dir / "model" / "weights.safetensors")
    assert equal_weights(model.trunk.state_dict(), {k[6:]: v for k, v in bundle.items() if k.startswith("trunk.")})
    assert record["layout"]["width"] == 4 and record["layout"]["remove_maxpool"] is True



def test_rescale_init_undoes_weight_growth_and_is_recorded(data, tmp_path):
    trunk = build_trunk("resnet18", width=8)
    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    # a fresh init already sits at sqrt(2·in) within sampling noise: factors near 1
    assert all(abs(f - 1) < 0.15 for f in rescale_to_init_norms(build_trunk("resnet18", width=8)))
    with torch.no_grad():
        for i, m in enumerate(convs):
            m.weight.mul_(1.5 + i)  # growth as long pre-training gives
    factors = rescale_to_init_norms(trunk)
    assert all(f < 0.7 for f in factors)
    assert all(m.weight.norm().item() == pytest.approx(math.sqrt(2 * m.in_channels), rel=1e-5) for m in convs)
    weights = tmp_path / "grown.safetensors"
    save_weights(weights, trunk.state_dict())
    cfg = cfg_for(data, f"model.init={weights}", "model.rescale_init=true")
    model, record = build_classifier(cfg, 7)
    assert record["rescaled"]["convs"] == len(convs) and record["rescaled"]["max"] == pytest.approx(1.0, abs=1e-5)
