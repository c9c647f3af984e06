"""Command line: parse, load the config, call one library function. No logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path

from frafer.config.schema import Arch
from frafer.errors import FraferError


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options every training command shares."""
    p.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its latest checkpoint")
    p.add_argument("--run-dir", help="run folder (default: train.out_dir/train.name)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in a run folder that holds another run, replacing its results")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads of torch (= train.threads; default: the cores less one per data worker)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frafer", description="FRA self-supervised facial representation learning")
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="pre-train FRA, BYOL or MoCo v2 (the recipe's method:) on unlabelled faces")
    pre.add_argument("--config", help="YAML recipe, e.g. configs/pretrain/fra_r50_vggface2.yaml")
    _run_options(pre)
    pre.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.base_lr=0.5")

    for name, what in (("finetune", "fine-tune a pre-trained (or random) trunk on expression labels"),
                       ("linear-probe", "train a linear head on the frozen trunk (cached features or faithful)")):
        ft = sub.add_parser(name, help=what)
        ft.add_argument("--config", help="YAML recipe, e.g. configs/finetune/rafdb.yaml")
        _run_options(ft)
        ft.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. model.init=runs/pre data.root=…")

    ev = sub.add_parser("evaluate", help="accuracy, macro-F1, confusion matrix and per-class report of a model bundle")
    ev.add_argument("model", help="model bundle folder, or a fine-tuning run folder (its selected model/)")
    ev.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    ev.add_argument("--format", help="dataset layout: affectnet, rafdb, fer2013, ferplus, folders, synthetic")
    ev.add_argument("--split", default="test", help="train, val or test (default: test)")
    ev.add_argument("--out", help="report folder (default: <bundle>/eval-<format>-<split>)")
    ev.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ev.add_argument("--batch-size", type=int, default=256)
    ev.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ev.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads of torch (0 = the default)")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="data options, e.g. folds=10 fold=3")

    ver = sub.add_parser("verify", help="10-fold face verification (LFW, CFP-FP, CFP-FF) of a trunk")
    ver.add_argument("checkpoint", help="pre-training run, checkpoint, bundle, torchvision-layout state dict, or "
                     "'none': a random-init trunk built from --arch / --width / --remove-maxpool / --seed")
    ver.add_argument("--pairs", required=True, choices=["lfw", "cfp-fp", "cfp-ff"], help="protocol")
    ver.add_argument("--root", required=True, help="dataset root in its native layout")
    ver.add_argument("--image-size", type=int, default=0, help="input side (default: as trained, else 224)")
    ver.add_argument("--device", default="cpu")
    ver.add_argument("--batch-size", type=int, default=128)
    ver.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ver.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads of torch (0 = the default)")
    ver.add_argument("--out", help="result JSON (default: verification_<pairs>_<root folder>.json beside the "
                     "weights; for 'none', in the current folder)")
    ver.add_argument("--arch", default="resnet50", choices=typing.get_args(Arch),
                     help="random-init trunk (checkpoint 'none' only)")
    ver.add_argument("--blocks", type=int, nargs=4, metavar="N", help="blocks per stage of the random-init trunk")
    ver.add_argument("--width", type=int, default=64, help="first-stage channels of the random-init trunk")
    ver.add_argument("--remove-maxpool", action="store_true", help="random-init trunk without the stem max-pool")
    ver.add_argument("--seed", type=int, default=0, help="seed of the random-init trunk")

    exp = sub.add_parser("export-backbone", help="write a run's online trunk as torchvision-layout safetensors")
    exp.add_argument("run", help="run folder, checkpoint folder or weights file")
    exp.add_argument("--out", help="output file (default: RUN/backbone.safetensors)")

    pr = sub.add_parser("predict", help="find the faces in photos, folders or videos and label their expressions")
    pr.add_argument("inputs", nargs="+", metavar="[BUNDLE] INPUT",
                    help="images, videos or folders (searched recursively); a model bundle or fine-tuning run folder "
                         "may come first, else the built-in model (frafer models) labels them")
    pr.add_argument("--model", help="model bundle, fine-tuning run folder, or built-in model name (default: "
                    "the first input when it is a bundle, else the default built-in model)")
    pr.add_argument("--cam-layer", choices=["layer2", "layer3", "layer4"],
                    help="trunk stage of the --heatmaps Grad-CAM (default: the deepest with at least 6x6 cells)")
    pr.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    pr.add_argument("--detector", default="mtcnn", choices=["mtcnn", "haar", "none"],
                    help="mtcnn: boxes + 5 landmarks (default); haar: OpenCV's cascade, faster, boxes only")
    pr.add_argument("--no-detect", action="store_true", help="each image is one cropped face (= --detector none)")
    pr.add_argument("--min-face", type=int, help="smallest face side in pixels the detector looks for")
    pr.add_argument("--heatmaps", action="store_true", help="also draw where the model looked, per face: the "
                    "classifier's Grad-CAM, and FRA's region maps when the bundle has them")
    pr.add_argument("--framing", default="", metavar="PRESET",
                    help="cut detected faces with this preset (fer2013, rafdb, affectnet, synthetic, box: "
                         "data/fer/framing.py) instead of the framing the bundle records")
    pr.add_argument("--heatmap-trunk", default="pretrained", choices=["pretrained", "finetuned"],
                    help="trunk under the region heatmaps (default: the pre-trained one the regions were learnt on)")
    pr.add_argument("--every", type=int, default=1, metavar="K", help="videos: process every K-th frame")
    pr.add_argument("--smooth", type=float, default=0.0, help="videos: EMA of each face track's probabilities, 0..1")
    pr.add_argument("--no-annotate", action="store_true", help="write no annotated images or videos")
    pr.add_argument("--resume", action="store_true", help="skip files that OUT/done.txt lists as finished")
    pr.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="classifier runtime")
    pr.add_argument("--onnx", help="ONNX file for --backend onnx (default: BUNDLE/model.onnx, exported if missing)")
    pr.add_argument("--providers", help="onnxruntime execution providers, comma-separated (default: all available)")
    pr.add_argument("--batch-size", type=int, default=32, help="faces per classifier batch")
    pr.add_argument("--max-pixels", type=int, default=100_000_000, help="refuse larger images (decompression bombs)")
    pr.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    pr.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads of torch (0 = the default)")

    ex = sub.add_parser("export", help="write a model bundle as ONNX, checked against PyTorch")
    ex.add_argument("model", help="model bundle folder, or a fine-tuning run folder")
    ex.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    ex.add_argument("--with-regions", action="store_true", help="add the region heatmaps as a second output")
    ex.add_argument("--int8", action="store_true", help="also write PATH with .int8.onnx: quantised to int8 on the "
                    "check faces (several times faster on CPUs with VNNI/AMX), refused if it changes the top-1 of "
                    "more than 3 %% of them")
    ex.add_argument("--check-images", metavar="FOLDER", help="faces to compare PyTorch and onnxruntime on "
                    "(default: the bundle's test faces when found, else random normalised inputs)")

    sub.add_parser("methods", help="list the pre-training methods and downstream heads, one line each")

    mo = sub.add_parser("models", help="list the built-in expression models (name, classes, input, accuracy, size, "
                        "data, licence)")
    mo.add_argument("name", nargs="?", default="", help="one built-in model (with --verbose: its whole card)")
    mo.add_argument("--verbose", "-v", action="store_true", help="print the model card's measured figures")

    sv = sub.add_parser("serve", help="serve a model over HTTP with a web page (default: the built-in model on "
                        "http://127.0.0.1:8000)")
    sv.add_argument("model", nargs="?", default="", help="model bundle, fine-tuning run folder or built-in model name "
                    "(default: the default built-in model)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--workers", type=int, default=1, help="server processes, each with its own model")
    sv.add_argument("--token-file", help="file holding the bearer token clients must send (or set FRAFER_TOKEN)")
    sv.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    sv.add_argument("--detector", default="mtcnn", choices=["mtcnn", "haar", "none"],
                    help="default face finder of POST /v1/predict")
    sv.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (413 above)")
    sv.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image, read from its header (413)")
    sv.add_argument("--max-batch", type=int, default=16, help="requests classified together at most")
    sv.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill")
    sv.add_argument("--max-queue", type=int, default=64, help="requests waiting beyond this get 503")
    sv.add_argument("--timeout", type=float, default=30.0, help="seconds before a request gets 504")
    sv.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                    help="allow browser pages from ORIGIN to call the API (repeatable; CORS is off without it)")
    sv.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads of torch per process")

    ca = sub.add_parser("calibrate", help="fit a bundle's softmax temperature on a validation split and store it")
    ca.add_argument("model", help="model bundle folder, or a fine-tuning run folder (its selected model/)")
    ca.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    ca.add_argument("--format", help="dataset layout: affectnet, rafdb, fer2013, ferplus, folders, synthetic")
    ca.add_argument("--split", default="val", help="the split to fit on (default: val; never the test split you "
                    "report)")
    ca.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ca.add_argument("--batch-size", type=int, default=256)
    ca.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ca.add_argument("overrides", nargs="*", metavar="key=value", help="data options, e.g. folds=10 fold=3")

    cfg = sub.add_parser("config", help="print the resolved config, or every key with its default and meaning")
    cfg.add_argument("--config", help="YAML recipe")
    cfg.add_argument("--keys", action="store_true", help="list every key, its default and what it means")
    cfg.add_argument("--kind", choices=["pretrain", "finetune"], default="pretrain",
                     help="which schema: pre-training or downstream (finetune / linear-probe)")
    cfg.add_argument("overrides", nargs="*", metavar="key=value")

    sw = sub.add_parser("sweep", help="run a grid of chained runs (pre-train → probe → fine-tune), then tabulate it")
    sw.add_argument("sweep", help="sweep file, e.g. configs/sweeps/temperature_tiny.yaml")
    sw.add_argument("--out", help="sweep folder (default: runs/sweeps/<sweep name>); a rerun continues it")
    sw.add_argument("--devices", default="", help="comma-separated devices, one point on each at a time "
                    "(e.g. cuda:0,cuda:1; default: one point at a time on the recipes' own device)")

    res = sub.add_parser("results", help="one table of many runs: a sweep folder, or run folders side by side")
    res.add_argument("runs", nargs="+", help="run folders (their differing config keys become columns) or one sweep")
    res.add_argument("--metric", action="append", default=[], help="metric to show, e.g. best_val.test.top1 "
                     "(repeatable; default: validation and test top-1, kNN)")
    res.add_argument("--fold", action="append", default=[], metavar="KEY", help="config key whose runs fold into "
                     "mean ± std, e.g. data.label_seed for label subsets (repeatable)")
    res.add_argument("--plot", metavar="KEY", help="also plot each metric against this config key, e.g. "
                     "data.label_fraction: a line per setting of the other keys that differ (needs --out)")
    res.add_argument("--out", help="folder for the --plot figures")

    demo = sub.add_parser("demo", help="synthetic faces: pre-train FRA, BYOL and MoCo v2, then probe and fine-tune")
    demo.add_argument("--config", default="configs/demo.yaml", help="pre-training recipe (default: configs/demo.yaml)")
    demo.add_argument("--finetune-config", default="configs/demo_finetune.yaml",
                      help="downstream recipe (default: configs/demo_finetune.yaml)")
    demo.add_argument("--ft", action="append", default=[], metavar="key=value",
                      help="override of the downstream recipe (repeatable)")
    demo.add_argument("--out", default="runs/demo", help="demo folder: data and run (default: runs/demo)")
    demo.add_argument("--seed", type=int, default=0,
                      help="train.seed of every pre-training, probe and fine-tune (the data stay the same)")
    demo.add_argument("--threads", type=int, metavar="N", help="CPU threads of torch (= train.threads)")
    demo.add_argument("--methods", default="FRA,BYOL,MoCo v2",
                      help="comma-separated pre-training methods to compare (default: FRA,BYOL,MoCo v2)")
    demo.add_argument("--ft-lrs", metavar="LR,LR,…",
                      help="fine-tuning learning rates tried for every init, the one best on val kept "
                           "(default: 3e-3,1e-2; 3e-3 alone fine-tunes every init at the recipe's rate)")
    demo.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def _run_plan(args, cls, default_stem: str):
    """(config, run folder, resume?) from --config / --resume / --run-dir and the overrides, for any training loop."""
    from frafer.config.loader import load_config
    from frafer.engine.common import default_run_dir

    if getattr(args, "threads", None) is not None:
        args.overrides = [*args.overrides, f"train.threads={args.threads}"]
    if args.resume:
        if args.config:
            raise FraferError("--resume takes the run's own config.yaml; drop --config (overrides are allowed)")
        run_dir = Path(args.resume)
        if args.run_dir and Path(args.run_dir).resolve() != run_dir.resolve():
            raise FraferError(f"--resume {run_dir} continues that folder in place; drop --run-dir {args.run_dir}")
        if not (run_dir / "config.yaml").is_file():
            hint = ("--resume takes the run folder to continue, not a flag: --resume RUN"
                    if "=" in args.resume and not run_dir.exists() else "is it a run folder?")
            raise FraferError(f"--resume {run_dir}: no config.yaml there; {hint}")
        return load_config(run_dir / "config.yaml", args.overrides, cls), run_dir, True
    cfg = load_config(args.config, args.overrides, cls)
    stem = Path(args.config).stem if args.config else default_stem
    return cfg, Path(args.run_dir or default_run_dir(cfg.train.out_dir, cfg.train.name, stem)), False


def _pretrain(args) -> int:
    from frafer.config.loader import PretrainConfig
    from frafer.train.pretrain import pretrain

    cfg, run_dir, resume = _run_plan(args, PretrainConfig, "pretrain")
    result = pretrain(cfg, run_dir, resume=resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{result.stopped} at step {result.step}, loss {result.last_loss:.4f}; run folder: {result.run_dir}")
    return 0


def _downstream(args) -> int:
    from frafer.config.schema import FinetuneConfig
    from frafer.train.finetune import finetune
    from frafer.train.linear_probe import linear_probe

    entry = finetune if args.command == "finetune" else linear_probe
    cfg, run_dir, resume = _run_plan(args, FinetuneConfig, args.command)
    result = entry(cfg, run_dir, resume=resume, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{result.stopped} at step {result.step}; results: {result.run_dir / 'results.md'}")
    return 0


def _evaluate(args) -> int:
    from frafer.engine.machine import set_threads
    from frafer.eval.evaluate import evaluate_bundle

    set_threads(args.threads, args.workers)
    report, files = evaluate_bundle(args.model, args.format, args.data, args.split, args.out, args.device,
                                    args.batch_size, args.workers, args.overrides)
    print(f"{report['dataset']} {args.split}: top-1 {report['top1']:.2f}%, mean class acc "
          f"{report['mean_class_acc']:.2f}%, macro-F1 {report['macro_f1']:.2f}% on {report['count']} images")
    c = report["calibration"]
    print(f"calibration: ECE {c['ece_before']:.2f}% at T = 1, {c['ece_after']:.2f}% at the bundle's T = "
          f"{c['temperature']:.3f}")
    print(f"report: {files['md']}")
    return 0


def _verify(args) -> int:
    from frafer.engine.machine import set_threads
    from frafer.eval.verification import RandomTrunk, verify_checkpoint

    set_threads(args.threads, args.workers)
    random_trunk = RandomTrunk(args.arch, list(args.blocks or []), args.width, args.remove_maxpool, args.seed)
    result, path = verify_checkpoint(args.checkpoint, args.pairs, args.root, args.image_size, args.device,
                                     args.batch_size, args.workers, args.out, random_trunk)
    print(f"{args.pairs}: accuracy {result['accuracy']:.2f}% ± {result['std']:.2f} (10-fold), AUC {result['auc']:.2f}%"
          f", {result['pairs']} pairs ({result['skipped_pairs']} skipped)")
    print(f"result: {path}")
    return 0


def _config(args) -> int:
    from frafer.config.loader import PretrainConfig, describe, load_config
    from frafer.config.schema import FinetuneConfig, dump_yaml

    cls = FinetuneConfig if args.kind == "finetune" else PretrainConfig
    if args.keys:
        for key, default, help_text in describe(cls):
            print(f"{key} = {default!r}\n    {help_text}")
        return 0
    print(dump_yaml(load_config(args.config, args.overrides, cls)), end="")
    return 0


def _methods(args) -> int:
    from frafer.methods import METHODS
    from frafer.methods.heads import HEADS

    width = max(len(name) for name in (*METHODS, *HEADS))
    print("pre-training methods (method: in a pretrain recipe):")
    for m in METHODS.values():
        print(f"  {m.name:<{width}}  {m.summary}")
    print("downstream heads (frafer linear-probe / finetune):")
    for h in HEADS.values():
        print(f"  {h.name:<{width}}  {h.summary}")
    return 0


def _export(args) -> int:
    from frafer.artifacts.export import export_backbone

    print(export_backbone(args.run, args.out))
    return 0


def _predict(args) -> int:
    from frafer.engine.machine import set_threads
    from frafer.infer.batch import check_run_options, run_predict
    from frafer.infer.predictor import Predictor

    if args.min_face is not None and args.min_face < 1:
        raise FraferError(f"--min-face must be a face side of 1 pixel or more, got {args.min_face}")
    if args.threads < 0:
        raise FraferError(f"--threads must be 0 (the default) or more, got {args.threads}")
    check_run_options(args.every, args.smooth)  # before any model is loaded or file written
    set_threads(args.threads)
    options = {"min_face": args.min_face} if args.min_face and not args.no_detect else {}
    providers = [p.strip() for p in args.providers.split(",")] if args.providers else None
    model, inputs = _predict_model(args.model, args.inputs)
    options |= dict(device=args.device, detector="none" if args.no_detect else args.detector, backend=args.backend,
                    onnx_path=args.onnx, providers=providers, heatmaps=args.heatmaps,
                    heatmap_trunk=args.heatmap_trunk, batch_size=args.batch_size, max_pixels=args.max_pixels,
                    framing=args.framing, cam_layer=args.cam_layer)
    predictor = (Predictor.from_bundle(model, **options) if isinstance(model, Path) else
                 Predictor.from_pretrained(model, **options))
    summary = run_predict(predictor, inputs, args.out, resume=args.resume, annotated=not args.no_annotate,
                          heatmaps=args.heatmaps, every=args.every, smooth=args.smooth)
    print("\n".join(summary.lines()))
    print(f"results: {Path(args.out) / 'predictions.jsonl'}, {Path(args.out) / 'faces.csv'}")
    return 1 if summary.failed else 0


def _predict_model(model: str | None, inputs: list[str]) -> tuple[Path | str, list[str]]:
    """Which model predicts, and on what: --model (a bundle path or a built-in name), else a first input that is a
    bundle or run folder, else the default built-in model ('')."""
    from frafer.artifacts.bundle import find_bundle

    def bundle_at(path: str) -> Path | None:
        try:
            return find_bundle(path)
        except FraferError:
            return None

    if model:
        if Path(model).exists():
            return find_bundle(model), inputs
        return model, inputs  # a built-in model's name; unknown names are refused listing the known ones
    first = bundle_at(inputs[0])
    if first is not None:
        if len(inputs) == 1:
            raise FraferError(f"{inputs[0]} is a model bundle: give the images, videos or folders to label after it")
        return first, inputs[1:]
    return "", inputs


def _models(args) -> int:
    from frafer.eval.reports import markdown_table
    from frafer.pretrained import builtin_path, describe, summary_rows

    if args.name or args.verbose:
        names = [args.name] if args.name else [p["name"].split(" ")[0] for p in summary_rows()]
        for name in names:
            builtin_path(name, verify=False)  # an unknown name lists the known ones
            print(describe(name))
        return 0
    rows = summary_rows()
    print(markdown_table(rows, list(rows[0])) if rows else "this install holds no built-in model")
    return 0


def _serve(args) -> int:
    import json

    import uvicorn

    from frafer.engine.machine import set_threads
    from frafer.serve.app import ENV, ServeSettings, create_app

    token = os.environ.get("FRAFER_TOKEN", "")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as err:
            raise FraferError(f"--token-file {args.token_file}: {err.strerror or err}") from None
        if not token:
            raise FraferError(f"--token-file {args.token_file} is empty")
    if args.workers < 1 or not 0 < args.port < 65536 or args.threads < 0:
        raise FraferError("--workers must be 1 or more, --port in 1..65535 and --threads 0 or more")
    settings = ServeSettings(model=args.model, device=args.device, detector=args.detector, token=token,
                             max_upload_bytes=int(args.max_upload_mb * 1_000_000), max_pixels=args.max_pixels,
                             max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             timeout_s=args.timeout, cors_origins=args.cors_origin).check()
    set_threads(args.threads)
    app = create_app(settings)  # loads the model here: a bad one fails before anything listens
    if not token and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host} without a token: anyone who reaches it can use it "
              f"(--token-file or FRAFER_TOKEN)", file=sys.stderr)
    print(f"frafer serve: http://{args.host}:{args.port}/ (API docs at /docs); Ctrl-C stops it")
    if args.workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    else:  # each worker process builds its own app from the same settings
        from dataclasses import asdict

        os.environ[ENV] = json.dumps(asdict(settings))
        uvicorn.run("frafer.serve.app:app_from_env", factory=True, host=args.host, port=args.port,
                    workers=args.workers, log_level="warning")
    return 0


def _calibrate(args) -> int:
    from frafer.eval.evaluate import calibrate_bundle

    c = calibrate_bundle(args.model, args.format, args.data, args.split, args.device, args.batch_size, args.workers,
                         args.overrides)
    print(f"temperature {c['temperature']:.3f} fitted on {c['fitted_on']} ({c['count']} images): ECE "
          f"{c['ece_before']:.2f}% → {c['ece_after']:.2f}%, NLL {c['nll_before']:.4f} → {c['nll_after']:.4f}; "
          f"written to the bundle's bundle.json")
    return 0


def _export_onnx(args) -> int:
    from frafer.artifacts.bundle import find_bundle, load_bundle
    from frafer.artifacts.onnx_export import export_onnx, faces_for_check, quantize_int8

    bundle = load_bundle(find_bundle(args.model))
    faces = faces_for_check(bundle, args.check_images, count=256 if args.int8 else 32)
    report = export_onnx(bundle, args.onnx, args.with_regions, faces)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in report["max_abs_diff"].items())
    print(f"wrote {report['path']}; max |onnxruntime - PyTorch| on {report['checked_on']}: {diffs}")
    if args.int8:
        if faces is None:
            raise FraferError("--int8 calibrates on real faces: give --check-images FOLDER")
        if args.with_regions:
            raise FraferError("--int8 quantises the classifier alone: export without --with-regions")
        q = quantize_int8(args.onnx, Path(args.onnx).with_suffix(".int8.onnx"), faces)
        print(f"wrote {q['path']}; int8 top-1 agrees with fp32 on {100 * q['agreement']:.1f} % of "
              f"{q['calibrated_on']} faces")
    return 0


def _sweep(args) -> int:
    from frafer.experiments.report import write_sweep_results
    from frafer.experiments.sweep_run import run_sweep
    from frafer.experiments.sweep_spec import load_sweep

    sweep = load_sweep(args.sweep)
    out = Path(args.out or Path("runs") / "sweeps" / sweep.name)
    outcome = run_sweep(args.sweep, out, [d.strip() for d in args.devices.split(",") if d.strip()])
    print(write_sweep_results(sweep, out.resolve()))
    failed = {p: s for p, s in outcome.items() if s != "ok"}
    for point, stage in failed.items():
        print(f"failed: {point} at {stage} (see {out / 'runs' / point / stage}.log)")
    print(f"results: {out / 'results.md'}, {out / 'results.csv'}, {out / 'plots'}")
    return 1 if failed else 0


def _results(args) -> int:
    from frafer.experiments.report import plot_runs, runs_table

    if args.plot and not args.out:
        raise FraferError("--plot needs --out, the folder for its figures")
    runs = [Path(r) for r in args.runs]
    if (args.plot or args.fold) and len(runs) == 1 and (runs[0] / "sweep.yaml").is_file():
        raise FraferError("a sweep folder folds its own replicates and draws its own plots/; --fold and --plot "
                          "are for run folders")
    print(runs_table(runs, args.metric, args.fold))
    if args.plot:
        for path in plot_runs(runs, args.plot, Path(args.out), args.metric, args.fold):
            print(f"plot: {path}")
    return 0


def _demo(args) -> int:
    from frafer.demo import DEMO_FT_LRS, run_demo

    seeded = [f"train.seed={args.seed}"] + ([] if args.threads is None else [f"train.threads={args.threads}"])
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    given = [o.split("=", 1)[1] for o in args.ft if o.startswith("optim.lr=")]
    if given and args.ft_lrs:
        raise FraferError("give the fine-tuning learning rate once: --ft optim.lr=… or --ft-lrs, not both")
    try:
        text = args.ft_lrs or (given[-1] if given else "")
        lrs = tuple(float(x) for x in text.split(",") if x.strip()) if text else DEMO_FT_LRS
    except ValueError:
        raise FraferError(f"--ft-lrs takes numbers separated by commas, got {args.ft_lrs!r}") from None
    if not lrs or min(lrs) <= 0:
        raise FraferError(f"--ft-lrs needs at least one positive learning rate, got {args.ft_lrs!r}")
    run_demo(args.config, args.out, [*args.overrides, *seeded], args.finetune_config, [*seeded, *args.ft], methods,
             lrs)
    return 0


COMMANDS = {
    "pretrain": _pretrain, "finetune": _downstream, "linear-probe": _downstream, "evaluate": _evaluate,
    "verify": _verify, "config": _config, "export-backbone": _export, "demo": _demo, "methods": _methods,
    "predict": _predict, "export": _export_onnx, "sweep": _sweep, "results": _results, "models": _models,
    "calibrate": _calibrate, "serve": _serve,
}


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
