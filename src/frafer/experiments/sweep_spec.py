"""A sweep file: stages that chain (pre-train → probe → fine-tune) and the points to run them at.

    name: temperature-tiny
    prepare: demo-data              # optional: the demo's synthetic faces, written once into <sweep>/data
    stages:                         # run in this order for every point
      pretrain: {command: pretrain, config: ../demo.yaml, overrides: ["data.root=${data}/pretrain"]}
      probe:    {command: linear-probe, config: ../demo_finetune.yaml, init: pretrain, overrides: [...]}
    grid:                           # every combination (or `points:`, a list of {key: value} maps;
                                    # with both, every point is crossed with the grid)
      pretrain.model.heatmap_temperature: [0.5, 1.0]
      seed: [0, 1, 2]               # train.seed of every stage
    metrics: [probe.best_val.test.top1]

An axis key is `<stage>.<config key>` (the stage's own config), `seed`, or `all.<config key>` for every stage; in a
`points` list, a null value (`~`) leaves the key as the stage sets it.
`init: <stage>` sets model.init to that stage's run folder, unless the point sets `<stage>.model.init` itself (e.g.
`none`: the random-init baseline beside the pre-trained one). `${data}` and `${sweep}` expand to the prepared data and
the sweep folder, `${env:NAME}` to an environment variable (a dataset root: `FERPLUS=/data/FERPlus frafer sweep …`).
Config paths are relative to the sweep file. Every key is checked against its stage's schema before anything runs,
so a typo stops the sweep at once, naming the key.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from frafer.config.loader import PretrainConfig, load_config, read_yaml
from frafer.config.schema import FinetuneConfig
from frafer.errors import FraferError

COMMANDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "linear-probe": FinetuneConfig}
PREPARERS = ("", "demo-data")
TOP_KEYS = {"name", "prepare", "stages", "grid", "points", "metrics", "replicates"}
STAGE_KEYS = {"command", "config", "init", "overrides"}


@dataclass(frozen=True)
class Stage:
    name: str
    command: str
    config: Path
    init: str = ""  # the stage whose run folder becomes model.init
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Point:
    """One setting of the swept keys; `values` maps each axis key to its value."""

    values: tuple[tuple[str, object], ...]

    @property
    def name(self) -> str:
        """A folder name saying the setting, e.g. `heatmap_temperature=0.5,seed=0`.

        A key goes by its last part unless another of the point's keys ends the same way: then by its stage too
        (`probe.init=none,finetune.init=none`), so that two different settings never share a folder.
        """
        names = short_names([key for key, _ in self.values])
        parts = [f"{names[key]}={_text(value)}" for key, value in self.values if value is not None]
        return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", ",".join(parts)) or "default"

    def up_to(self, stages: list[str]) -> Point:
        """The setting as far as it reaches `stages` (a stage and those before it): what that stage's run depends on.

        Points that differ only in a later stage's keys share the earlier stages' runs (one pre-training for
        several fine-tuning recipes).
        """
        return Point(tuple((k, v) for k, v in self.values
                           if k == "seed" or k.partition(".")[0] in (*stages, "all")))

    def overrides_for(self, stage: str) -> list[str]:
        out = []
        for key, value in self.values:
            target, _, config_key = key.partition(".")
            if value is None:  # a point that leaves this key at its stage's value
                continue
            if key == "seed":
                out.append(f"train.seed={_text(value)}")
            elif target in (stage, "all"):
                out.append(f"{config_key}={_text(value)}")
        return out


@dataclass
class Sweep:
    name: str
    path: Path
    stages: list[Stage]
    points: list[Point]
    axes: list[str]
    prepare: str = ""
    metrics: list[str] = field(default_factory=list)
    tree: dict = field(default_factory=dict)  # the file's content with config paths made absolute
    replicates: list[str] = field(default_factory=lambda: ["seed"])  # axes folded into mean ± std, like seeds

    @property
    def settings_axes(self) -> list[str]:
        """The axes a results table keeps apart: every axis but the replicates."""
        return [a for a in self.axes if a not in self.replicates]

    def resolved_yaml(self) -> str:
        """The sweep as a file that loads from anywhere: what a sweep folder keeps as its sweep.yaml."""
        return yaml.safe_dump(self.tree, sort_keys=False)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key's last part, or `<stage>.<last part>` where two keys share a last part (the full key if even that
    is shared)."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    staged = [f"{key.partition('.')[0]}.{key.rsplit('.', 1)[-1]}" if "." in key else key for key in keys]
    return {key: (tail if last.count(tail) == 1 else short if staged.count(short) == 1 else key)
            for key, tail, short in zip(keys, last, staged, strict=True)}


def _text(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def _as_list(value, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise FraferError(f"{what} must be a list, got {value!r}")
    return value


def load_sweep(path: str | Path, check_configs: bool = True) -> Sweep:
    """Read and check a sweep file; raises FraferError naming the first thing wrong.

    `check_configs=False` reads a finished sweep's record for its results: the stage recipes it names (perhaps in a
    checkout since removed) need not exist, and its keys are not checked against them again."""
    path = Path(path)
    if not path.is_file():
        raise FraferError(f"sweep file {path} does not exist")
    tree = read_yaml(path)  # the recipes' own reader: `base: _fragment.yaml` shares stage blocks between sweeps
    unknown = sorted(set(tree) - TOP_KEYS)
    if unknown:
        raise FraferError(f"sweep file {path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(TOP_KEYS))})")
    prepare = tree.get("prepare") or ""
    if prepare not in PREPARERS:
        raise FraferError(f"sweep 'prepare' must be one of {', '.join(p for p in PREPARERS if p)}, got {prepare!r}")
    stages = _read_stages(tree.get("stages"), path, check_configs)
    points, axes = _read_points(tree, {s.name for s in stages})
    resolved = dict(tree, stages={s.name: {**tree["stages"][s.name], "config": str(s.config)} for s in stages})
    replicates = [str(r) for r in _as_list(tree.get("replicates"), "replicates")]
    strays = [r for r in replicates if r not in axes]
    if strays:
        raise FraferError(f"sweep 'replicates' names '{strays[0]}', which is not one of its axes "
                          f"({', '.join(axes)})")
    sweep = Sweep(str(tree.get("name") or path.stem), path, stages, points, axes, prepare,
                  [str(m) for m in _as_list(tree.get("metrics"), "metrics")], resolved, ["seed", *replicates])
    if check_configs:
        _check_keys(sweep)
    return sweep


def _read_stages(raw, path: Path, check_configs: bool = True) -> list[Stage]:
    if not isinstance(raw, dict) or not raw:
        raise FraferError(f"sweep file {path}: 'stages' must map stage names to {{command, config, ...}}")
    stages: list[Stage] = []
    for name, spec in raw.items():
        if name in ("seed", "all") or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", str(name)):
            raise FraferError(f"stage name {name!r}: letters, digits, _ and - only; 'seed' and 'all' are reserved")
        if not isinstance(spec, dict):
            raise FraferError(f"stage '{name}' must be a mapping with command and config")
        unknown = sorted(set(spec) - STAGE_KEYS)
        if unknown:
            raise FraferError(f"stage '{name}': unknown key '{unknown[0]}' (known: {', '.join(sorted(STAGE_KEYS))})")
        command = spec.get("command")
        if command not in COMMANDS:
            raise FraferError(f"stage '{name}': command must be one of {', '.join(COMMANDS)}, got {command!r}")
        if not spec.get("config"):
            raise FraferError(f"stage '{name}' needs a config (a recipe path relative to the sweep file)")
        config = (path.parent / spec["config"]).resolve()
        if check_configs and not config.is_file():
            raise FraferError(f"stage '{name}': config {config} does not exist")
        init = str(spec.get("init") or "")
        if init and init not in {s.name for s in stages}:
            raise FraferError(f"stage '{name}': init '{init}' must name an earlier stage")
        if init and COMMANDS[command] is not FinetuneConfig:
            raise FraferError(f"stage '{name}': only finetune and linear-probe stages take an init")
        overrides = tuple(str(o) for o in _as_list(spec.get("overrides"), f"stage '{name}' overrides"))
        stages.append(Stage(str(name), command, config, init, overrides))
    return stages


def _read_points(tree: dict, stage_names: set[str]) -> tuple[list[Point], list[str]]:
    """The points of `points` (a list), of `grid` (every combination), or of each point crossed with the grid."""
    rows: list[dict] = [{}]
    if "points" in tree:
        rows = _as_list(tree["points"], "points")
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise FraferError("'points' must be a non-empty list of {key: value} mappings")
        listed = list(dict.fromkeys(k for r in rows for k in r))
        missing = [(i, k) for i, r in enumerate(rows) for k in listed if k not in r]
        if missing:
            raise FraferError(f"point {missing[0][0]} has no value for '{missing[0][1]}': give every point every key")
    grid = tree.get("grid") or {}
    if not isinstance(grid, dict):
        raise FraferError("'grid' must map keys to lists of values")
    both = set(grid) & {k for r in rows for k in r}
    if both:
        raise FraferError(f"'{sorted(both)[0]}' is both in 'points' and in 'grid': give it in one of them")
    values = []
    for key in grid:
        options = grid[key] if isinstance(grid[key], list) else [grid[key]]
        if not options:
            raise FraferError(f"grid key '{key}' has no values")
        values.append(options)
    axes = list(dict.fromkeys([*(k for r in rows for k in r), *grid]))
    points = []
    for row in rows:
        for combo in itertools.product(*values):
            setting = row | dict(zip(grid, combo, strict=True))
            points.append(Point(tuple((k, setting[k]) for k in axes)))
    for key in axes:
        target = key.partition(".")[0]
        if key != "seed" and (target not in stage_names | {"all"} or "." not in key):
            raise FraferError(f"sweep key '{key}': write <stage>.<config key> (stages: {', '.join(sorted(stage_names))}"
                              "), all.<config key> or seed")
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        raise FraferError("two points of the sweep have the same setting")
    return points, axes


def _check_keys(sweep: Sweep) -> None:
    """Build every stage's config at every point (placeholders filled with dummies): unknown keys fail here.

    Environment variables are dummies too: reading a sweep's results must not need its dataset roots
    (`require_env` checks them before a sweep runs)."""
    for stage in sweep.stages:
        for point in sweep.points:
            overrides = [expand(ENV_PLACEHOLDER.sub("/env", o), "/sweep", "/data")
                         for o in (*stage.overrides, *point.overrides_for(stage.name))]
            try:
                load_config(stage.config, overrides, COMMANDS[stage.command])
            except FraferError as err:
                raise FraferError(f"sweep {sweep.path}, stage '{stage.name}', point {point.name}: {err}") from err


ENV_PLACEHOLDER = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def require_env(sweep: Sweep) -> None:
    """Refuse to run a sweep whose stages name an environment variable that is not set, before anything runs."""
    for stage in sweep.stages:
        for text in stage.overrides:
            expand(text, "/sweep", "/data")


def expand(text: str, sweep_dir: str | Path, data_dir: str | Path) -> str:
    """Fill `${sweep}`, `${data}` and `${env:NAME}` (an environment variable, e.g. a dataset root) into `text`."""
    def from_env(match: re.Match) -> str:
        name = match.group(1)
        if not os.environ.get(name):
            raise FraferError(f"the sweep needs the environment variable {name} (in {text!r}); set it, e.g. "
                              f"{name}=/data/... frafer sweep ...")
        return os.environ[name]

    text = text.replace("${sweep}", str(sweep_dir)).replace("${data}", str(data_dir))
    return ENV_PLACEHOLDER.sub(from_env, text)


def stage_dir(sweep: Sweep, sweep_dir: Path, point: Point, stage: str) -> Path:
    """Where a point's stage runs: <sweep>/runs/<setting>/<stage>/, its log and status file beside it.

    <setting> names only the values that reach the stage (`Point.up_to`), so points that agree on them share it.
    """
    names = [s.name for s in sweep.stages]
    return sweep_dir / "runs" / point.up_to(names[:names.index(stage) + 1]).name / stage


def stage_runs(sweep: Sweep, sweep_dir: Path, stage: str) -> dict[Path, Point]:
    """The distinct run folders of a stage, each with the first point that uses it (shared runs appear once)."""
    runs: dict[Path, Point] = {}
    for point in sweep.points:
        runs.setdefault(stage_dir(sweep, sweep_dir, point, stage), point)
    return runs


def stage_status(sweep: Sweep, sweep_dir: Path, point: Point, stage: str) -> dict | None:
    """The stage's status file (ok or failed, exit code, seconds), or None while it has not ended."""
    path = stage_dir(sweep, sweep_dir, point, stage).with_suffix(".json")
    return json.loads(path.read_text()) if path.is_file() else None
