"""frafer: FRA self-supervised pre-training and facial expression recognition.

Public entries: `frafer.pretrain(cfg)`, `frafer.load_config(path, overrides)`, `frafer.export_backbone(run)`.
They are imported on first use, so `import frafer` stays light.
"""

__version__ = "0.1.0"

_ENTRIES = {
    "pretrain": "frafer.train.pretrain",
    "load_config": "frafer.config",
    "export_backbone": "frafer.train.export",
}


def __getattr__(name: str):
    if name in _ENTRIES:
        import importlib

        return getattr(importlib.import_module(_ENTRIES[name]), name)
    raise AttributeError(f"module 'frafer' has no attribute {name!r}")
