"""Thread counts and the record of what a run executed on."""

import torch

from frafer.engine import machine


def test_default_threads_leave_a_core_per_data_worker(monkeypatch):
    monkeypatch.setattr(machine, "available_cores", lambda: 2)
    assert machine.default_threads(0) == 2
    assert machine.default_threads(1) == 1
    assert machine.default_threads(8) == 1  # never below one
    monkeypatch.setattr(machine, "available_cores", lambda: 16)
    assert machine.default_threads(4) == 12
    assert machine.default_threads(4, processes_per_machine=2) == 4  # torchrun: each process its share


def test_set_threads_takes_an_explicit_count_and_the_local_world(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(machine, "available_cores", lambda: 8)
        assert machine.set_threads(3) == 3 and torch.get_num_threads() == 3
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        assert machine.set_threads(0, num_workers=1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert machine.set_threads(0, num_workers=1) == 3
    finally:
        torch.set_num_threads(before)


def test_limited_threads_restores_the_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with machine.limited_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_machine_info_names_the_kernels_and_threads():
    info = machine.machine_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["threads"] == torch.get_num_threads() and info["cores_available"] >= 1
    assert info["cpu"] and isinstance(info["cpu_flags"], list) and info["onednn"] != ""


def test_demo_seed_and_threads_reach_every_stage(monkeypatch):
    from frafer import demo
    from frafer.cli import main

    calls = {}
    monkeypatch.setattr(demo, "run_demo", lambda *args: calls.setdefault("args", args))
    assert main(["demo", "--seed", "2", "--threads", "1", "--out", "x", "train.epochs=2"]) == 0
    config, out, pre, finetune_config, ft, methods, lrs = calls["args"]
    assert methods == ("FRA", "BYOL", "MoCo v2") and lrs == demo.DEMO_FT_LRS
    assert out == "x" and pre == ["train.epochs=2", "train.seed=2", "train.threads=1"]
    assert ft == ["train.seed=2", "train.threads=1"]


def test_demo_takes_its_fine_tuning_learning_rates(monkeypatch, capsys):
    from frafer import demo
    from frafer.cli import main

    calls = {}
    monkeypatch.setattr(demo, "run_demo", lambda *args: calls.__setitem__("args", args))
    assert main(["demo", "--ft-lrs", "1e-3,0.01"]) == 0
    assert calls["args"][-1] == (1e-3, 0.01)
    assert main(["demo", "--ft-lrs", "fast"]) == 2
    assert "--ft-lrs takes numbers" in capsys.readouterr().err
    assert main(["demo", "--ft-lrs", "0"]) == 2
    assert main(["demo", "--ft", "optim.lr=0.02"]) == 0  # the recipe override still sets the rate
    assert calls["args"][-1] == (0.02,)
    assert main(["demo", "--ft", "optim.lr=0.02", "--ft-lrs", "1e-3"]) == 2
