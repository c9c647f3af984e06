"""Shared tiny settings, data in native layouts and fixtures: every test runs on CPU in seconds.

Test modules import their shared pieces from here, never from each other.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frafer.artifacts.checkpoint import latest_checkpoint, load_weights
from frafer.config.loader import build_config, load_config
from frafer.config.schema import FinetuneConfig, ModelConfig
from frafer.data.synthetic.renderer import write_synthetic_dataset
from frafer.eval import reports as metrics_module
from frafer.train.finetune import finetune
from frafer.train.linear_probe import linear_probe
from frafer.train.pretrain import pretrain

torch.set_num_threads(2)


def tiny_model_config(**changes) -> ModelConfig:
    """A ResNet-18-layout trunk 1/8 as wide, 16-dim embeddings: the FRA wiring at toy cost."""
    base = dict(
        arch="resnet18", width=8, remove_maxpool=True, proj_hidden_dim=32, proj_dim=16, query_dim=16,
        decoder_heads=4, decoder_ffn_dim=16, decoder_dropout=0.0, num_queries=4,
    )
    base.update(changes)
    return ModelConfig(**base)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return tiny_model_config()


@pytest.fixture
def fail_on_call(monkeypatch):
    """fail_on_call(module, name, n, error): the n-th call of module.name raises `error` (the calls before it run
    as usual); returns a function that restores the original. For crashes at a chosen point of a batch."""

    def patch(module, name: str, n: int, error: BaseException):
        real = getattr(module, name)
        calls = []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) == n:
                raise error
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, failing)
        return lambda: monkeypatch.setattr(module, name, real)

    return patch


# ----------------------------------------------------------------------------------------------- pre-training

TINY_PRETRAIN = [
    "model.arch=resnet18", "model.width=8", "model.remove_maxpool=true", "model.proj_hidden_dim=32",
    "model.proj_dim=16", "model.query_dim=16", "model.decoder_heads=4", "model.decoder_ffn_dim=16",
    "model.num_queries=4", "data.image_size=32", "data.num_workers=0", "train.batch_size=8",
    "train.precision=fp32", "train.tensorboard=false", "train.log_every=1", "optim.warmup_epochs=1",
    "monitor.knn_at_start=false",
]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """24 synthetic faces of 6 identities, 32 px, as an image folder."""
    return write_synthetic_dataset(tmp_path_factory.mktemp("faces"), num_images=24, size=32, num_identities=6)


def pretrain_cfg(faces, *more):
    """The tiny pre-training config on the `faces` folder, with overrides."""
    return load_config(None, [*TINY_PRETRAIN, "data.source=folder", f"data.root={faces}", *more])


def train_losses(run_dir) -> list[float]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["loss"] for x in lines if x["kind"] == "train"]


def straight_and_resumed(faces, tmp_path, *settings) -> tuple[dict, dict]:
    """The weights after 4 steps in one run and after 2 steps, stopped, then resumed to 4 (2 epochs of 3 steps)."""
    fast = [*settings, "train.epochs=2"]
    pretrain(pretrain_cfg(faces, *fast, "train.max_steps=4"), tmp_path / "straight")
    pretrain(pretrain_cfg(faces, *fast, "train.max_steps=2"), tmp_path / "resumed")
    pretrain(pretrain_cfg(faces, *fast, "train.max_steps=4"), tmp_path / "resumed", resume=True)
    return tuple(load_weights(latest_checkpoint(tmp_path / name) / "weights.safetensors")
                 for name in ("straight", "resumed"))


# ----------------------------------------------------------------------------------------------- downstream

TINY_FINETUNE = [
    "data.format=synthetic", "data.image_size=32", "data.num_workers=0", "model.arch=resnet18", "model.width=4",
    "model.remove_maxpool=true", "train.precision=fp32", "train.tensorboard=false", "train.device=cpu",
    "train.batch_size=8", "train.log_every=1", "optim.warmup_epochs=1", "probe.batch_size=8",
]
AUG_OFF = ["aug.flip_p=0", "aug.jitter=[0,0,0,0]", "aug.translate=0", "aug.rotate=0", "aug.erase_p=0"]
TINY_FRA = [
    "model.arch=resnet18", "model.width=8", "model.remove_maxpool=true", "model.proj_hidden_dim=32",
    "model.proj_dim=16", "model.query_dim=16", "model.decoder_heads=4", "model.decoder_ffn_dim=16",
    "model.num_queries=4", "data.image_size=32", "data.num_workers=0", "train.batch_size=16",
    "train.precision=fp32", "train.tensorboard=false", "train.log_every=1", "train.device=cpu",
    "optim.warmup_epochs=1", "monitor.knn_at_start=false",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three synthetic folders merged by Usage: train 32 (4 steps of 8), val 12, test 12; disjoint identities."""
    base = tmp_path_factory.mktemp("fer")
    train = write_synthetic_dataset(base / "train", 32, size=32, num_identities=8, seed=0, usage="Training")
    val = write_synthetic_dataset(base / "val", 12, size=32, num_identities=4, seed=1, identity_offset=8,
                                  usage="PublicTest")
    test = write_synthetic_dataset(base / "test", 12, size=32, num_identities=4, seed=2, identity_offset=12,
                                   usage="PrivateTest")
    return {"train": train, "val": val, "test": test}


def finetune_cfg(data, *more, train_root=None, extra=("val", "test")) -> FinetuneConfig:
    """The tiny downstream config on the `data` folders (train + the `extra` splits merged by Usage)."""
    roots = [f"data.root={train_root or data['train']}", f"data.extra_roots=[{','.join(str(data[k]) for k in extra)}]"]
    return build_config({}, [*TINY_FINETUNE, *roots, *more], FinetuneConfig)


def ft_with_init(data, init, *more) -> FinetuneConfig:
    """The tiny downstream config initialised from `init`."""
    # width / max-pool deliberately unlike the tiny FRA run's, so a layout taken from the run shows
    return finetune_cfg(data, f"model.init={init}", "model.width=4", "model.remove_maxpool=false", *more)


# ----------------------------------------------------------------------------------------------- verification

COLOURS = {"Ann_A": (230, 30, 30), "Bob_B": (30, 230, 30), "Cat_C": (30, 30, 230), "Dan_D": (230, 230, 30)}

# With a mean-colour embedding, same pairs score 1 and each fold's different pairs score 1/3 and -1/3, so every
# training threshold lies at 2/3, well clear of every held-out score.
LFW_PAIRS = """2\t2
Ann_A\t1\t2
Bob_B\t1\t2
Ann_A\t1\tDan_D\t2
Cat_C\t1\tBob_B\t1
Cat_C\t1\t2
Dan_D\t1\t2
Ann_A\t2\tCat_C\t2
Bob_B\t2\tDan_D\t1
"""


def write_lfw(tmp_path: Path, pairs_text: str = LFW_PAIRS) -> Path:
    """lfw/<name>/<name>_000n.jpg (8x8, one colour per person) and pairs.txt beside the image folder."""
    root = tmp_path / "lfw"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for n in (1, 2):
            Image.new("RGB", (8, 8), colour).save(root / name / f"{name}_{n:04d}.jpg", quality=95)
    (tmp_path / "pairs.txt").write_text(pairs_text)
    return root


# ----------------------------------------------------------------------------------------------- shared runs

@pytest.fixture(scope="module")
def one_thread():
    """For a module of tiny networks (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a busy 2-core
    machine two OpenMP threads cost far more than they compute."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal: a background job (nohup, `cmd &`) starts with SIGINT
    ignored, and a raised SIGINT would then do nothing at all."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def quick_figures(monkeypatch):
    """Confusion PNGs as a plain grey image of the counts: the Matplotlib figure costs ~0.4 s each and is drawn
    for real by the shared fine-tuning run the report tests read."""

    def figure(cm, classes, title, path):
        Image.fromarray(np.uint8(255 * cm / max(cm.max(), 1))).save(path, format="PNG")

    monkeypatch.setattr(metrics_module, "_confusion_figure", figure)








def metrics_lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def equal_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def ft_run(data, tmp_path_factory):
    """One uninterrupted 2-epoch fine-tune (8 steps, selection on val), with real figures: read by several tests."""
    run_dir = tmp_path_factory.mktemp("ft") / "run"
    result = finetune(finetune_cfg(data, "train.epochs=2"), run_dir)
    return run_dir, result


@pytest.fixture(scope="module")
def lp_faithful(data, tmp_path_factory):
    """The faithful linear probe with the training augmentation off, 2 epochs."""
    run_dir = tmp_path_factory.mktemp("lp") / "faithful"
    result = linear_probe(finetune_cfg(data, "probe.path=faithful", "probe.epochs=2", *AUG_OFF), run_dir)
    return run_dir, result


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    return write_lfw(tmp_path_factory.mktemp("verify"))


@pytest.fixture(scope="module")
def fra_run(data, lfw, tmp_path_factory):
    """A tiny FRA pre-training run (width 8, no max-pool; 2 steps) with the LFW verification monitor on."""
    run_dir = tmp_path_factory.mktemp("fra") / "run"
    cfg = load_config(None, [*TINY_FRA, "data.source=folder", f"data.root={data['train']}", "train.epochs=1",
                             "monitor.verify_pairs=lfw", f"monitor.verify_root={lfw}"])
    return run_dir, pretrain(cfg, run_dir)
