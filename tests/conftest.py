"""Shared tiny settings: every test runs on CPU in seconds."""

from __future__ import annotations

import pytest
import torch

from frafer.config.schema import ModelConfig

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
