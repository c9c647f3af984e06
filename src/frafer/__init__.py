"""frafer: FRA self-supervised pre-training and facial expression recognition.

Public entries: `frafer.pretrain(cfg)`, `frafer.finetune(cfg)`, `frafer.linear_probe(cfg)`,
`frafer.load_config(path, overrides, cls)`, `frafer.load_bundle(path)`, `frafer.evaluate_bundle(...)`,
`frafer.verify_checkpoint(...)`, `frafer.export_backbone(run)`, `frafer.Predictor` (photos → labelled faces;
`Predictor.from_pretrained()` for the built-in model).
They are imported on first use, so `import frafer` stays light.
"""

__version__ = "0.1.0"

_ENTRIES = {
    "pretrain": "frafer.train.pretrain",
    "finetune": "frafer.train.finetune",
    "linear_probe": "frafer.train.linear_probe",
    "load_config": "frafer.config.loader",
    "load_bundle": "frafer.artifacts.bundle",
    "evaluate_bundle": "frafer.eval.evaluate",
    "verify_checkpoint": "frafer.eval.verification",
    "export_backbone": "frafer.artifacts.export",
    "Predictor": "frafer.infer.predictor",
}


def __getattr__(name: str):
    if name in _ENTRIES:
        import importlib

        return getattr(importlib.import_module(_ENTRIES[name]), name)
    raise AttributeError(f"module 'frafer' has no attribute {name!r}")
