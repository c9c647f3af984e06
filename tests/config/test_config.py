"""Config schema: defaults from docs/method.md, overrides, and the named errors a user gets."""

from pathlib import Path

import pytest

from frafer.cli import main
from frafer.config.loader import PretrainConfig, describe, load_config, parse_override
from frafer.errors import FraferError


def test_method_defaults():
    c = PretrainConfig()
    assert (c.model.num_queries, c.model.query_dim, c.model.decoder_heads, c.model.decoder_ffn_dim) == (8, 256, 8, 256)
    assert c.model.decoder_dropout == 0.1 and c.model.heatmap_temperature == 1.0 and c.model.shared_masks
    assert (c.model.proj_hidden_dim, c.model.proj_dim) == (4096, 256)
    assert (c.loss.lambda_c, c.loss.lambda_r, c.loss.decorrelation_weight) == (0.5, 0.1, 0.02)
    assert (c.loss.student_temperature, c.loss.teacher_temperature, c.loss.sinkhorn_iterations) == (0.1, 0.04, 3)
    assert c.loss.diversity_weight == 0.0 and c.loss.relation_views == "mean"
    assert (c.optim.base_lr, c.optim.reference_batch, c.optim.weight_decay) == (0.9, 512, 1e-6)
    assert (c.optim.lars_momentum, c.optim.lars_eta, c.optim.warmup_epochs) == (0.9, 1e-3, 10)
    assert (c.optim.ema_base, c.optim.ema_final, c.train.epochs) == (0.996, 1.0, 50)
    assert c.aug.jitter == (0.4, 0.4, 0.2, 0.1) and c.aug.blur_p == (1.0, 0.1) and c.aug.solarize_p == (0.0, 0.2)
    assert c.aug.mean == (0.5231, 0.4044, 0.3489) and c.aug.std == (0.2536, 0.2194, 0.2070)
    assert c.monitor.knn_k == 20


def test_every_key_is_documented():
    assert all(help_text for _, _, help_text in describe())


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model: {arch: resnet18}\ndata: {source: synthetic}\n")
    cfg = load_config(path, ["optim.base_lr=0.3", "aug.crop_scale=[0.5, 1]", "train.precision=fp32"])
    assert cfg.model.arch == "resnet18" and cfg.optim.base_lr == 0.3 and cfg.aug.crop_scale == (0.5, 1.0)
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert load_config(None, ["data.source=synthetic", "optim.weight_decay=1e-5"]).optim.weight_decay == 1e-5


@pytest.mark.parametrize(
    "override, words",
    [
        ("optim.lrr=0.1", ["unknown config key 'optim.lrr'", "base_lr"]),
        ("bogus.x=1", ["unknown config key 'bogus'"]),
        ("train.epochs=ten", ["'train.epochs'", "expected float"]),
            ("train.steps=1.5", ["'train.steps'", "expected int"]),
        ("train.epochs=0", ["'train.epochs'", "range"]),
        ("model.arch=vgg", ["'model.arch'", "'resnet50'"]),
        ("aug.flip_p=1.5", ["'aug.flip_p'", "range"]),
        ("model.heatmap_temperature=0", ["'model.heatmap_temperature'", "range"]),
        ("aug.jitter=[0.4]", ["'aug.jitter'", "expected 4 values"]),
        ("train.sync_bn=maybe", ["'train.sync_bn'", "expected bool"]),
        ("novalue", ["expected key=value"]),
    ],
)
def test_bad_values_name_the_key(override, words):
    with pytest.raises(FraferError) as err:
        load_config(None, ["data.source=synthetic", override])
    for w in words:
        assert w in str(err.value)


def test_folder_source_needs_a_root():
    with pytest.raises(FraferError, match="data.root"):
        load_config(None, [])


def test_cli_prints_one_line_and_exits_2(capsys):
    code = main(["config", "data.source=synthetic", "optim.lrr=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "optim.lrr" in err


def test_cli_missing_config_file(capsys, tmp_path):
    assert main(["pretrain", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in capsys.readouterr().err


def test_cli_resume_names_what_it_takes(capsys, tmp_path):
    # `--run-dir R --resume key=value` (--resume as a flag) used to read the override as the run folder
    assert main(["pretrain", "--run-dir", str(tmp_path), "--resume", "data.root=/faces"]) == 2
    assert "drop --run-dir" in capsys.readouterr().err
    assert main(["pretrain", "--resume", "data.root=/faces"]) == 2
    assert "not a flag: --resume RUN" in capsys.readouterr().err
    assert main(["pretrain", "--resume", str(tmp_path)]) == 2
    assert "is it a run folder?" in capsys.readouterr().err


def test_cli_overrides_may_follow_options(tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text("data: {source: synthetic}\n")
    assert main(["config", "optim.base_lr=0.5", "--config", str(path), "train.epochs=3"]) == 0
    out = capsys.readouterr().out
    assert "base_lr: 0.5" in out and "epochs: 3" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["config", "--config", str(path), "--bogus"])
    assert exit_info.value.code == 2


def test_public_entries():
    import frafer
    from frafer.train.pretrain import pretrain

    assert frafer.pretrain is pretrain and frafer.load_config is load_config
    with pytest.raises(AttributeError):
        frafer.no_such_entry  # noqa: B018


def test_methods_lists_every_method_and_head_and_an_unknown_method_exits_2(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines if line.startswith("  ")]
    assert names == ["fra", "byol", "moco_v2", "linear", "finetune", "dmue"]
    assert main(["config", "method=nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["frafer: error: unknown method 'nosuch' (known: fra, byol, moco_v2)"]


RECIPES = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_recipe_loads(recipe, monkeypatch):
    from frafer.config.schema import FinetuneConfig
    from frafer.experiments.sweep_spec import ENV_PLACEHOLDER, load_sweep

    if recipe.parent.name == "sweeps":  # a sweep file: every stage's config at every point is built and checked
        if recipe.name.startswith("_"):  # a fragment the sweeps share: checked through each sweep that uses it
            assert any(f"base: {recipe.name}" in r.read_text() for r in RECIPES if r.parent == recipe.parent)
            return
        for name in ENV_PLACEHOLDER.findall(recipe.read_text()):  # a dataset root given by the environment
            monkeypatch.setenv(name, "/data")
        assert load_sweep(recipe).points
        return
    cls = FinetuneConfig if recipe.parent.name == "finetune" or "finetune" in recipe.stem else PretrainConfig
    cfg = load_config(recipe, ["data.root=/data"], cls)
    if cls is PretrainConfig:
        assert cfg.method in ("fra", "byol", "moco_v2")


def test_label_smoothing_is_refused_where_there_is_no_single_target():
    from frafer.config.schema import FinetuneConfig

    base = ["data.root=/d", "data.format=ferplus", "optim.label_smoothing=0.1"]
    assert load_config(None, [*base, "data.crowd_mode=crossentropy"], FinetuneConfig).optim.label_smoothing == 0.1
    with pytest.raises(FraferError, match="'optim.label_smoothing': crowd_mode=multilabel"):
        load_config(None, [*base, "data.crowd_mode=multilabel"], FinetuneConfig)


def test_mixing_is_refused_for_dmue():
    from frafer.config.schema import FinetuneConfig

    base = ["data.root=/d", "aug.mix=mixup"]
    assert load_config(None, base, FinetuneConfig).aug.mix == "mixup"
    with pytest.raises(FraferError, match="'aug.mix': DMUE"):
        load_config(None, [*base, "model.head=dmue"], FinetuneConfig)
    with pytest.raises(FraferError, match="aug.mix"):
        load_config(None, ["data.root=/d", "aug.mix=blend"], FinetuneConfig)


def test_a_recipe_starts_from_its_base_section_by_section(tmp_path):
    from frafer.config.schema import FinetuneConfig

    (tmp_path / "_base.yaml").write_text("optim: {lr: 0.001, weight_decay: 0.5}\ntrain: {epochs: 3}\n")
    (tmp_path / "r.yaml").write_text("base: _base.yaml\noptim: {lr: 0.002}\ndata: {root: /d}\n")
    cfg = load_config(tmp_path / "r.yaml", [], FinetuneConfig)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.train.epochs) == (0.002, 0.5, 3.0)
    (tmp_path / "_base.yaml").write_text("base: r.yaml\n")
    with pytest.raises(FraferError, match="leads back to itself"):
        load_config(tmp_path / "r.yaml", [], FinetuneConfig)
