"""The sweep runner: a grid of chained runs, failures recorded, reruns skip what is done; tables fold seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from frafer.cli import main
from frafer.data.synthetic.renderer import write_synthetic_dataset
from frafer.errors import FraferError
from frafer.experiments.heatmap_panels import TILE
from frafer.experiments.plots import (
    in_step,
    plot_metric_against_axes,
    plot_metric_by_setting,
    setting_label,
    varying_axes,
)
from frafer.experiments.report import plot_runs, runs_rows, runs_table, write_sweep_results
from frafer.experiments.sweep_run import run_sweep, stage_command
from frafer.experiments.sweep_spec import Point, load_sweep, stage_dir, stage_status
from frafer.experiments.tables import mean_std_text, summarise
from tests.conftest import TINY_FINETUNE as TINY
from tests.conftest import TINY_FRA

ROOT = Path(__file__).resolve().parents[2]


def write_sweep(folder: Path, body: dict) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def recipes(folder: Path) -> dict:
    """A pre-training recipe (a few steps on built-in synthetic faces) and a cached-probe recipe, as YAML files."""
    pre = folder / "pre.yaml"
    pre.write_text(yaml.safe_dump({"data": {"source": "synthetic", "root": str(folder / "missing"),
                                            "synthetic": {"num_images": 32, "num_identities": 8}}}))
    probe = folder / "probe.yaml"
    probe.write_text(yaml.safe_dump({"data": {"format": "synthetic"}, "probe": {"epochs": 2}}))
    train = write_synthetic_dataset(folder / "fer" / "train", 16, size=32, num_identities=4, seed=0, usage="Training")
    val = write_synthetic_dataset(folder / "fer" / "val", 8, size=32, num_identities=2, seed=1, identity_offset=4,
                                  usage="PublicTest")
    return {
        "pretrain": {"command": "pretrain", "config": "pre.yaml", "overrides": [*TINY_FRA, "train.steps=2"]},
        "probe": {"command": "linear-probe", "config": "probe.yaml", "init": "pretrain",
                  "overrides": [*TINY, f"data.root={train}", f"data.extra_roots=[{val}]", "data.test_split=val"]},
    }


def test_a_sweep_runs_its_grid_records_a_failure_and_a_rerun_skips_what_is_done(tmp_path):
    stages = recipes(tmp_path)
    path = write_sweep(tmp_path, {"name": "tiny", "stages": stages,
                                  "grid": {"probe.probe.lr": [0.1, -1.0], "seed": [0, 1]},
                                  "metrics": ["probe.best_val.val.top1"]})
    with pytest.raises(FraferError, match="probe.lr"):  # -1 is out of bounds: caught before anything runs
        load_sweep(path)

    # a value the schema accepts but the run cannot use: pre-training from a folder that does not exist
    # the last point differs from the first only in the probe's learning rate: the two share one pre-training run
    points = [{"seed": 0, "pretrain.data.source": "synthetic", "probe.probe.lr": 0.1},
              {"seed": 1, "pretrain.data.source": "synthetic", "probe.probe.lr": 0.1},
              {"seed": 0, "pretrain.data.source": "folder", "probe.probe.lr": 0.1},
              {"seed": 0, "pretrain.data.source": "synthetic", "probe.probe.lr": 0.2}]
    path = write_sweep(tmp_path, {"name": "tiny", "stages": stages, "points": points,
                                  "metrics": ["probe.best_val.val.top1"]})
    stages_text = path.read_text()
    out = tmp_path / "out"
    outcome = run_sweep(path, out)
    assert list(outcome.values()) == ["ok", "ok", "pretrain", "ok"]
    sweep = load_sweep(path)
    failed = sweep.points[2]
    status = stage_status(sweep, out, failed, "pretrain")
    assert status["status"] == "failed" and status["returncode"] == 2 and "missing" in status["log_tail"]
    assert stage_status(sweep, out, failed, "probe") is None  # the stage after it was skipped
    first, last = sweep.points[0], sweep.points[3]
    shared = stage_dir(sweep, out, first, "pretrain")
    assert stage_dir(sweep, out, last, "pretrain") == shared and shared.parent.name == "seed=0,source=synthetic"
    assert shared.with_suffix(".log").read_text().count("\n$ ") == 1  # run once for both points
    assert stage_dir(sweep, out, first, "probe") != stage_dir(sweep, out, last, "probe")

    assert main(["results", str(out)]) == 0  # the sweep folder alone is enough
    before = (out / "results.md").read_text()
    recipe_texts = {name: (tmp_path / name).read_text() for name in ("pre.yaml", "probe.yaml")}
    for name in recipe_texts:
        (tmp_path / name).unlink()  # ... even once the recipes it ran are gone (a removed checkout)
    assert runs_table([out]) in before
    with pytest.raises(FraferError, match="pre.yaml does not exist"):
        run_sweep(out / "sweep.yaml", out)  # running it again still needs them
    for name, text in recipe_texts.items():
        (tmp_path / name).write_text(text)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["status"] for r in rows] == ["ok", "ok", "pretrain failed", "ok"]
    assert rows[0]["probe.best_val.val.top1"] and rows[0]["pretrain.train.loss"]
    table = (out / "results.md").read_text()
    assert "2/2" in table and "0/1" in table  # seeds that finished, per setting
    assert (out / "plots" / "pretrain_loss.png").is_file() and (out / "plots" / "pretrain_hm_entropy.png").is_file()
    panels = Image.open(out / "plots" / "pretrain_heatmaps.png")  # a row per finished pre-training run: 2 here
    assert panels.width == 6 * TILE and panels.height == 2 * (TILE + 16 + 4)
    assert (out / "plots" / "probe.best_val.val.top1_vs_pretrain.data.source.png").is_file()

    # a rerun: stages that ended ok are not run again, the failed one is retried
    def logs():
        return [stage_dir(sweep, out, p, "probe").with_suffix(".log").read_text() for p in sweep.points[:2]]
    before = logs()
    assert list(run_sweep(path, out).values()) == ["ok", "ok", "pretrain", "ok"]
    assert logs() == before
    assert stage_dir(sweep, out, failed, "pretrain").with_suffix(".log").read_text().count("\n$ ") == 2

    # other points in the same folder: the finished stages they share are reused, a new one runs
    changed = yaml.safe_load(stages_text)
    changed["points"] = [points[0], {"seed": 0, "pretrain.data.source": "synthetic", "probe.probe.lr": 0.3}]
    path.write_text(yaml.safe_dump(changed, sort_keys=False))
    assert list(run_sweep(path, out).values()) == ["ok", "ok"]
    assert logs()[0] == before[0] and shared.with_suffix(".log").read_text().count("\n$ ") == 1

    path.write_text(stages_text.replace("tiny", "other"))
    with pytest.raises(FraferError, match="holds another sweep"):
        run_sweep(path, out)


def test_a_killed_stage_resumes_from_its_checkpoint(tmp_path):
    stages = recipes(tmp_path)
    path = write_sweep(tmp_path, {"stages": {"pretrain": stages["pretrain"]}, "grid": {"seed": [0]}})
    sweep = load_sweep(path)
    point, stage = sweep.points[0], sweep.stages[0]
    fresh = stage_command(sweep, stage, point, tmp_path / "out", tmp_path / "data", "")
    assert "--config" in fresh and "--overwrite" in fresh and "train.seed=0" in fresh
    run_dir = tmp_path / "out" / "runs" / point.name / "pretrain"
    (run_dir / "checkpoints" / "step_00000001").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("{}")
    resumed = stage_command(sweep, stage, point, tmp_path / "out", tmp_path / "data", "cuda:1")
    assert resumed[3:6] == ["pretrain", "--resume", str(run_dir)] and resumed[-1] == "train.device=cuda:1"


def test_a_point_may_replace_a_stages_init(tmp_path):
    stages = recipes(tmp_path)
    points = [{"probe.model.init": "none"}, {"probe.model.init": None}]
    path = write_sweep(tmp_path, {"stages": stages, "points": points})
    sweep = load_sweep(path)
    probe = sweep.stages[1]
    assert [p.name for p in sweep.points] == ["init=none", "default"]
    random_init = stage_command(sweep, probe, sweep.points[0], tmp_path / "out", tmp_path / "data", "")
    assert [o for o in random_init if o.startswith("model.init=")] == ["model.init=none"]
    chained = stage_command(sweep, probe, sweep.points[1], tmp_path / "out", tmp_path / "data", "")
    assert [o for o in chained if o.startswith("model.init=")] == [
        f"model.init={stage_dir(sweep, tmp_path / 'out', sweep.points[1], 'pretrain')}"]


def test_keys_that_end_alike_are_named_by_their_stage_and_keep_their_folders_apart(tmp_path):
    stages = dict(recipes(tmp_path))
    stages["finetune"] = {**stages["probe"], "command": "finetune"}
    points = [{"probe.model.init": "none", "finetune.model.init": None, "pretrain.optim.base_lr": 0.5},
              {"probe.model.init": None, "finetune.model.init": "none", "pretrain.optim.base_lr": 0.5}]
    sweep = load_sweep(write_sweep(tmp_path, {"stages": stages, "points": points}))
    assert [p.name for p in sweep.points] == ["probe.init=none,base_lr=0.5", "finetune.init=none,base_lr=0.5"]
    folders = {stage_dir(sweep, tmp_path, p, "finetune") for p in sweep.points}
    assert len(folders) == 2  # with both named `init=none` the two fine-tunes would share one folder
    assert len({stage_dir(sweep, tmp_path, p, "pretrain") for p in sweep.points}) == 1  # the one pre-training


def test_env_placeholders_fill_dataset_roots_and_a_missing_one_is_named(tmp_path, monkeypatch):
    stages = recipes(tmp_path)
    stages["pretrain"]["overrides"].append("train.name=${env:FRAFER_TEST_NAME}")
    path = write_sweep(tmp_path, {"stages": {"pretrain": stages["pretrain"]}, "grid": {"seed": [0]}})
    monkeypatch.delenv("FRAFER_TEST_NAME", raising=False)
    load_sweep(path)  # reading the sweep (its results table) needs no dataset root
    with pytest.raises(FraferError, match="environment variable FRAFER_TEST_NAME"):
        run_sweep(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything ran
    monkeypatch.setenv("FRAFER_TEST_NAME", "from_env")
    sweep = load_sweep(path)
    command = stage_command(sweep, sweep.stages[0], sweep.points[0], tmp_path / "out", tmp_path / "data", "")
    assert "train.name=from_env" in command


@pytest.mark.parametrize("body, message", [
    ({"stages": {}}, "'stages' must map"),
    ({"stages": {"a": {"command": "pretrain", "config": "x.yaml"}}}, "does not exist"),
    ({"stages": {"a": {"command": "train", "config": "x"}}}, "command must be one of"),
    ({"stagse": {}}, "unknown key 'stagse'"),
    ({"stages": {"a": {"command": "pretrain", "config": "PRE", "init": "b"}}}, "earlier stage"),
    ({"stages": {"a": {"command": "pretrain", "config": "PRE"}}, "grid": {"model.width": [8]}}, "<stage>.<config"),
    ({"stages": {"a": {"command": "pretrain", "config": "PRE"}}, "grid": {"a.model.widht": [8]}}, "model.widht"),
    ({"stages": {"a": {"command": "pretrain", "config": "PRE"}}, "grid": {"seed": []}}, "has no values"),
    ({"stages": {"a": {"command": "pretrain", "config": "PRE"}}, "points": [{"seed": 0}, {"a.train.steps": 1}]},
     "no value for"),
    ({"stages": {"a": {"command": "pretrain", "config": "PRE"}}, "points": [{"seed": 0}], "grid": {"seed": [1]}},
     "both in 'points' and in 'grid'"),
    ({"stages": {"a": {"command": "pretrain", "config": "PRE"}}, "grid": {"seed": [0]},
      "replicates": ["a.data.label_seed"]}, "'a.data.label_seed', which is not one of its axes"),
])
def test_bad_sweep_files_are_refused_naming_the_problem(tmp_path, body, message):
    text = json.dumps(body).replace("PRE", str(ROOT / "configs" / "demo.yaml"))
    with pytest.raises(FraferError, match=message):
        load_sweep(write_sweep(tmp_path, json.loads(text)))


def test_points_are_crossed_with_the_grid(tmp_path):
    body = {"stages": {"a": {"command": "pretrain", "config": str(ROOT / "configs" / "demo.yaml")}},
            "points": [{"a.loss.diversity_weight": 0}, {"a.loss.diversity_weight": 0.01}],
            "grid": {"a.loss.diversity_mode": ["subtract", "add"], "seed": [0, 1]}}
    sweep = load_sweep(write_sweep(tmp_path, body))
    assert len(sweep.points) == 8
    assert sweep.axes == ["a.loss.diversity_weight", "a.loss.diversity_mode", "seed"]
    assert sweep.points[-1].name == "diversity_weight=0.01,diversity_mode=add,seed=1"


def test_points_name_their_setting_and_route_keys_to_their_stage():
    point = Point((("pretrain.model.heatmap_temperature", 0.5), ("all.train.epochs", 2), ("seed", 1)))
    assert point.name == "heatmap_temperature=0.5,epochs=2,seed=1"
    assert point.overrides_for("pretrain") == ["model.heatmap_temperature=0.5", "train.epochs=2", "train.seed=1"]
    assert point.overrides_for("finetune") == ["train.epochs=2", "train.seed=1"]


def test_tables_fold_seeds_into_mean_and_sample_std():
    rows = [{"tau": 0.5, "seed": s, "status": "ok", "acc": a} for s, a in ((0, 60.0), (1, 64.0), (2, 62.0))]
    rows += [{"tau": 1.0, "seed": 0, "status": "ok", "acc": 70.0}, {"tau": 1.0, "seed": 1, "status": "probe failed"}]
    table = summarise(rows, ["tau", "seed"], ["acc"])
    assert table == [{"tau": "0.5", "seeds": "3/3", "acc": "62.00 ± 2.00"},
                     {"tau": "1", "seeds": "1/2", "acc": "70.00"}]
    lrs = summarise([{"lr": 4.89e-5, "init": None, "seed": 0, "status": "ok", "acc": 1.0}], ["lr", "init", "seed"], [])
    assert lrs == [{"lr": "4.89e-05", "init": "(recipe)", "seeds": "1/1"}]  # not 0.00; a null is the recipe's
    assert mean_std_text([]) == ""
    assert mean_std_text([2.07944, 2.07921, 2.07960]) == "2.07942 ± 0.00020"  # the spread sets the decimals


def test_replicate_axes_fold_like_seeds_in_the_written_results(tmp_path):
    """Three label subsets per label fraction, declared replicates: results.md has a row per fraction (n = 3), and
    the plot against the fraction has no second axis to split its line by."""
    body = {"stages": {"probe": {"command": "linear-probe", "config": str(ROOT / "configs" / "demo_finetune.yaml")}},
            "grid": {"probe.data.label_fraction": [0.1, 1.0], "probe.data.label_seed": [0, 1, 2]},
            "replicates": ["probe.data.label_seed"], "metrics": ["probe.best_val.test.top1"]}
    sweep = load_sweep(write_sweep(tmp_path, body), check_configs=False)
    assert sweep.settings_axes == ["probe.data.label_fraction"]
    for point in sweep.points:
        run = stage_dir(sweep, tmp_path / "out", point, "probe")
        run.mkdir(parents=True)
        setting = dict(point.values)
        top1 = 40.0 + 10 * setting["probe.data.label_fraction"] + setting["probe.data.label_seed"]
        (run / "results.json").write_text(json.dumps({"best_val": {"test": {"top1": top1}}}))
        run.with_suffix(".json").write_text(json.dumps({"status": "ok"}))
    table = write_sweep_results(sweep, tmp_path / "out")
    assert "label_seed" not in table
    assert "| 0.1 | 3/3 | 42.00 ± 1.00 |" in table and "| 1 | 3/3 | 51.00 ± 1.00 |" in table
    assert (tmp_path / "out" / "plots" / "probe.best_val.test.top1_vs_probe.data.label_fraction.png").is_file()
    assert not (tmp_path / "out" / "plots" / "probe.best_val.test.top1_vs_probe.data.label_seed.png").exists()


def test_results_of_run_folders_show_the_keys_that_differ(tmp_path):
    for name, lr, top1 in (("a", 0.001, 50.0), ("b", 0.003, 55.5)):
        run = tmp_path / name
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": lr, "weight_decay": 0.05},
                                                         "train": {"name": name}}))
        (run / "results.json").write_text(json.dumps({"best_val": {"val": {"top1": top1}, "test": {"top1": top1}}}))
    table = runs_table([tmp_path / "a", tmp_path / "b"])
    header = table.splitlines()[0]
    assert "optim.lr" in header and "weight_decay" not in header and "train.name" not in header
    assert "55.50" in table
    with pytest.raises(FraferError, match="are they run folders"):
        runs_table([tmp_path])


def test_plots_of_a_points_list_name_only_the_keys_that_vary(tmp_path):
    axes = ["pretrain.optim.lars_eta", "finetune.optim.layer_decay", "finetune.optim.lr", "seed"]
    settings = [(None, None), (0.003, None), (None, 0.6)]  # a baseline and two remedies, one key each; lr the same
    rows = [{"pretrain.optim.lars_eta": eta, "finetune.optim.layer_decay": decay, "finetune.optim.lr": 3e-3,
             "seed": seed, "status": "ok", "acc": 50.0 + 5 * i + seed}
            for i, (eta, decay) in enumerate(settings) for seed in range(3)]
    rows[-1]["status"] = "finetune failed"
    assert varying_axes(rows, axes) == ["pretrain.optim.lars_eta", "finetune.optim.layer_decay"]
    assert [setting_label(rows[i], varying_axes(rows, axes)) for i in (0, 3, 6)] == [
        "recipe", "lars_eta=0.003", "layer_decay=0.6"]
    written = plot_metric_against_axes(rows, axes, ["acc"], tmp_path)
    assert sorted(p.name for p in written) == ["acc_vs_finetune.optim.layer_decay.png",
                                               "acc_vs_pretrain.optim.lars_eta.png"]  # no plot against the fixed lr
    (chart,) = plot_metric_by_setting(rows, axes, ["acc"], tmp_path)
    with Image.open(chart) as image:
        assert image.height == round((0.9 + 0.38 * 3) * 110)  # its height grows per bar: three settings, not nine
    assert plot_metric_by_setting(rows, axes, ["missing"], tmp_path) == []


def test_sweeps_share_stage_blocks_through_a_base_fragment(tmp_path):
    """`base: _fragment.yaml` merges stage by stage, as recipes do: a sweep restates only what it changes."""
    for name in ("pre.yaml", "ft.yaml"):
        (tmp_path / name).write_text("train: {epochs: 1}\n")
    (tmp_path / "_shared.yaml").write_text(yaml.safe_dump({"stages": {
        "pretrain": {"command": "pretrain", "config": "pre.yaml", "overrides": ["train.steps=4"]},
        "probe": {"command": "linear-probe", "config": "ft.yaml", "init": "pretrain", "overrides": []}}}))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump({
        "base": "_shared.yaml", "name": "shared", "stages": {"pretrain": {"overrides": ["train.steps=8"]}},
        "grid": {"seed": [0, 1]}}))
    sweep = load_sweep(tmp_path / "s.yaml", check_configs=False)
    assert [s.name for s in sweep.stages] == ["pretrain", "probe"] and len(sweep.points) == 2
    assert sweep.tree["stages"]["pretrain"] == {"command": "pretrain", "config": str(tmp_path / "pre.yaml"),
                                                "overrides": ["train.steps=8"]}
    (tmp_path / "_shared.yaml").write_text("base: s.yaml\n")
    with pytest.raises(FraferError, match="leads back to itself"):
        load_sweep(tmp_path / "s.yaml", check_configs=False)


def _label_run(folder: Path, init: str, fraction: float, label_seed: int, top1: float) -> Path:
    folder.mkdir(parents=True)
    epochs = {0.01: 100, 0.1: 30}[fraction]  # set per fraction: in step with it, so it must not split the lines
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "model": {"init": init}, "train": {"epochs": epochs},
        "data": {"label_fraction": fraction, "label_seed": label_seed}}))
    (folder / "results.json").write_text(json.dumps({"best_val": {"test": {"top1": top1}}}))
    return folder


def test_results_fold_label_subsets_and_plot_against_the_fraction(tmp_path, capsys):
    """Few-label fine-tunes from two trunks: `--fold data.label_seed` gives a row per (init, fraction) with mean ±
    std, init folders read by their names; `--plot data.label_fraction` draws one line per init (not one per
    epochs setting, which moves with the fraction)."""
    runs = [_label_run(tmp_path / f"{name}-{fraction}-{seed}", init, fraction, seed,
                       base + 100 * fraction + seed)
            for name, init, base in (("fra", str(tmp_path / "inits" / "fra_seed0"), 50.0), ("random", "none", 40.0))
            for fraction in (0.01, 0.1) for seed in (0, 1, 2)]
    table = runs_table(runs, ["best_val.test.top1"], ["data.label_seed"])
    assert "| 0.01 | fra_seed0 | 100 | 3/3 | 52.00 ± 1.00 |" in table
    assert "| 0.1 | none | 30 | 3/3 | 51.00 ± 1.00 |" in table and "label_seed" not in table
    assert main(["results", *map(str, runs), "--fold", "data.label_seed", "--plot", "data.label_fraction",
                 "--out", str(tmp_path / "plots")]) == 0
    (figure,) = (tmp_path / "plots").iterdir()
    assert figure.name == "best_val.test.top1_vs_data.label_fraction.png"
    rows, differing = runs_rows(runs)
    assert [a for a in differing if not in_step(rows, "data.label_fraction", a)] == [
        "data.label_seed", "model.init"]  # train.epochs moves with the fraction
    pair = [{"lr": 1e-3, "init": "none", "status": "ok"}, {"lr": 2e-4, "init": "fra", "status": "ok"}]
    assert not in_step(pair, "lr", "init")  # two single runs still show which init each point is
    with pytest.raises(FraferError, match="none of these folders reports best_val.test.top2"):
        runs_table(runs, ["best_val.test.top2"])
    with pytest.raises(FraferError, match="--fold data.label_sed: no such config key"):
        runs_table(runs, fold=["data.label_sed"])
    assert "3/3" in runs_table(runs[:3], fold=["data.label_seed", "train.epochs"])  # a shared key folds nothing
    with pytest.raises(FraferError, match="--plot train.epochs: not a config key that differs"):
        plot_runs(runs[:3], "train.epochs", tmp_path / "none")
    assert main(["results", *map(str, runs), "--plot", "data.label_fraction"]) == 2
    assert "--plot needs --out" in capsys.readouterr().err
