"""Command line: parse, load the config, call one library function. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from frafer.errors import FraferError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frafer", description="FRA self-supervised facial representation learning")
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="pre-train FRA (or BYOL) on unlabelled faces")
    pre.add_argument("--config", help="YAML recipe, e.g. configs/pretrain/fra_r50_vggface2.yaml")
    pre.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its latest checkpoint")
    pre.add_argument("--run-dir", help="run folder (default: train.out_dir/train.name)")
    pre.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.base_lr=0.5")

    exp = sub.add_parser("export-backbone", help="write a run's online trunk as torchvision-layout safetensors")
    exp.add_argument("run", help="run folder, checkpoint folder or weights file")
    exp.add_argument("--out", help="output file (default: RUN/backbone.safetensors)")

    cfg = sub.add_parser("config", help="print the resolved config, or every key with its default and meaning")
    cfg.add_argument("--config", help="YAML recipe")
    cfg.add_argument("--keys", action="store_true", help="list every key, its default and what it means")
    cfg.add_argument("overrides", nargs="*", metavar="key=value")

    demo = sub.add_parser("demo", help="pre-train on built-in synthetic faces and compare kNN with a random network")
    demo.add_argument("--config", default="configs/demo.yaml", help="demo recipe (default: configs/demo.yaml)")
    demo.add_argument("--out", default="runs/demo", help="demo folder: data and run (default: runs/demo)")
    demo.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def _pretrain(args) -> int:
    from frafer.config import load_config
    from frafer.train.pretrain import default_run_dir, pretrain

    if args.resume:
        if args.config:
            raise FraferError("--resume takes the run's own config.yaml; drop --config (overrides are allowed)")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise FraferError(f"--resume {run_dir}: no config.yaml there; is it a run folder?")
        cfg = load_config(run_dir / "config.yaml", args.overrides)
        result = pretrain(cfg, run_dir, resume=True)
    else:
        cfg = load_config(args.config, args.overrides)
        stem = Path(args.config).stem if args.config else "pretrain"
        result = pretrain(cfg, args.run_dir or default_run_dir(cfg, stem))
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{result.stopped} at step {result.step}, loss {result.last_loss:.4f}; run folder: {result.run_dir}")
    return 0


def _config(args) -> int:
    from frafer.config import describe, dump_yaml, load_config

    if args.keys:
        for key, default, help_text in describe():
            print(f"{key} = {default!r}\n    {help_text}")
        return 0
    print(dump_yaml(load_config(args.config, args.overrides)), end="")
    return 0


def _export(args) -> int:
    from frafer.train.export import export_backbone

    print(export_backbone(args.run, args.out))
    return 0


def _demo(args) -> int:
    from frafer.demo import run_demo

    run_demo(args.config, args.out, args.overrides)
    return 0


COMMANDS = {"pretrain": _pretrain, "config": _config, "export-backbone": _export, "demo": _demo}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse, letting key=value overrides stand before or after options (argparse alone stops at the first)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if e.startswith("-") or "=" not in e or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        return COMMANDS[args.command](args)
    except FraferError as err:
        print(f"frafer: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("frafer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
