"""The typed configuration schema: every section as a dataclass whose fields carry a default, a help line and bounds.

Every constant of the method is a field with its docs/method.md default. This module is the bottom of the package
(data, models and methods read their sections from it); reading recipes, overrides and checks live in
`frafer.config.loader`, and each pre-training method declares its own sections in its file (`frafer.methods`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml


def option(default: Any, help: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """A schema field with a default, a help line and optional numeric bounds [lo, hi] (lo exclusive if lo_open)."""
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)



_f = option  # the short name the sections below use

Arch = Literal["resnet18", "resnet34", "resnet50", "resnet50_slim"]
Precision = Literal["fp32", "bf16", "fp16"]


def _mean():
    return _f((0.5231, 0.4044, 0.3489), "normalisation mean (VGGFace2)")


def _std():
    return _f((0.2536, 0.2194, 0.2070), "normalisation std (VGGFace2)")


@dataclass
class SyntheticConfig:
    num_images: int = _f(4096, "images generated for data.source=synthetic", lo=1)
    num_identities: int = _f(200, "distinct synthetic identities", lo=1)
    seed: int = _f(0, "seed of the synthetic faces (independent of train.seed)")
    expression_gain: float = _f(
        1.8, "how far expressions deform a face (larger = easier to see; 1.8 = EXPRESSION_GAIN)", lo=0, lo_open=True
    )


@dataclass
class DataConfig:
    source: Literal["folder", "vggface2", "synthetic"] = _f(
        "folder", "folder: any image tree; vggface2: identity folders + optional loose boxes; synthetic: built-in faces"
    )
    root: str = _f("", "image root (folder / vggface2)")
    bbox_csv: str = _f("", "VGGFace2 loose_bb_*.csv to crop faces with (vggface2 only; empty = images are crops)")
    crop_margin: float = _f(0.0, "extra margin around VGGFace2 boxes, as a fraction of the box size", lo=0)
    image_size: int = _f(224, "side of the square training views in pixels", lo=16)
    num_workers: int = _f(8, "data loader worker processes per training process", lo=0)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class AugConfig:
    crop_scale: tuple[float, float] = _f((0.2, 1.0), "RandomResizedCrop area range")
    flip_p: float = _f(0.5, "horizontal flip probability", lo=0, hi=1)
    jitter: tuple[float, float, float, float] = _f(
        (0.4, 0.4, 0.2, 0.1), "colour jitter brightness, contrast, saturation, hue"
    )
    jitter_p: float = _f(0.8, "colour jitter probability", lo=0, hi=1)
    grey_p: float = _f(0.2, "greyscale probability", lo=0, hi=1)
    blur_p: tuple[float, float] = _f((1.0, 0.1), "Gaussian blur probability for view 1 / view 2")
    blur_sigma: tuple[float, float] = _f((0.1, 2.0), "Gaussian blur sigma range")
    solarize_p: tuple[float, float] = _f((0.0, 0.2), "solarisation probability for view 1 / view 2")
    mean: tuple[float, float, float] = _mean()
    std: tuple[float, float, float] = _std()
    on_device: bool = _f(False, "pre-training: colour jitter, greyscale, blur, solarisation and normalisation as "
                                "batched ops on the training device (the loader only decodes, crops and flips); "
                                "same distributions, other draws. For a GPU that the CPU cores cannot feed")


@dataclass
class ModelConfig:
    arch: Arch = _f("resnet50", "trunk architecture")
    blocks: list[int] = _f([], "residual blocks per stage; empty = the arch's own (resnet50_slim: 3,4,4,2)")
    width: int = _f(64, "channels of the first stage (64 = torchvision layout; smaller for tiny CPU runs)", lo=1)
    remove_maxpool: bool = _f(False, "drop the stem max-pool (output stride 16) for small images; no weights change")
    proj_hidden_dim: int = _f(4096, "hidden width of projectors and predictors", lo=1)
    proj_dim: int = _f(256, "embedding width of projectors and predictors", lo=1)
    num_queries: int = _f(8, "N, learnable facial queries = regions", lo=1)
    query_dim: int = _f(256, "width of queries and of the decoder", lo=1)
    decoder_layers: int = _f(1, "transformer decoder layers (paper: 1, official code: 2)", lo=1)
    decoder_heads: int = _f(8, "attention heads of the decoder", lo=1)
    decoder_ffn_dim: int = _f(256, "feed-forward width of the decoder", lo=1)
    decoder_dropout: float = _f(0.1, "dropout inside the decoder", lo=0, hi=1)
    shared_masks: bool = _f(True, "average mask embeddings over the global batch (official code); false = per image")
    prototype_momentum: float = _f(0.9, "EMA momentum of the mask prototypes: the batch-mean mask embeddings kept for "
                                        "inference, where heatmaps must not depend on the batch (official code: 0.9)",
                                   lo=0, hi=1)
    heatmap_temperature: float = _f(1.0, "tau: heatmaps = softmax over regions of scores / tau", lo=0, lo_open=True)
    heatmap_eps: float = _f(1e-7, "added to heatmaps before region pooling", lo=0)


@dataclass
class OptimConfig:
    optimizer: Literal["lars", "sgd"] = _f("lars", "LARS (FRA, BYOL) or SGD with momentum (MoCo v2; weight decay on "
                                                   "every parameter, as its code)")
    base_lr: float = _f(0.9, "learning rate at the reference batch", lo=0, lo_open=True)
    reference_batch: int = _f(512, "global batch that base_lr refers to", lo=1)
    scale_lr: bool = _f(False, "scale lr linearly with global batch / reference_batch (the official code does not)")
    weight_decay: float = _f(1e-6, "weight decay (LARS: not on biases and normalisation parameters)", lo=0)
    weight_decay_scope: Literal["all", "trunk"] = _f(
        "all", "which weights decay: all (the method) or the trunk's only, so the projectors, predictors and facial "
               "queries keep their scale under LARS (a departure; docs/results.md, 'Where FRA's regions form')")
    lars_momentum: float = _f(0.9, "LARS momentum", lo=0, hi=1)
    sgd_momentum: float = _f(0.9, "SGD momentum (optim.optimizer=sgd)", lo=0, hi=1)
    lars_eta: float = _f(1e-3, "LARS trust coefficient eta", lo=0, lo_open=True)
    lars_lr_in_buffer: bool = _f(True, "LARS momentum buffer accumulates lr-scaled steps (official code); false = "
                                       "PyTorch SGD's lr-free buffer")
    warmup_epochs: float = _f(10.0, "linear warm-up epochs (per step)", lo=0)
    warmup_steps: int = _f(-1, "linear warm-up in steps (-1 = from optim.warmup_epochs)", lo=-1)
    min_lr: float = _f(0.0, "learning rate at the end of the cosine", lo=0)
    ema_base: float = _f(0.996, "momentum-network coefficient at step 0 (cosine to ema_final)", lo=0, hi=1)
    ema_final: float = _f(1.0, "momentum-network coefficient at the last step", lo=0, hi=1)
    grad_clip: float = _f(0.0, "clip the global gradient norm to this value (0 = off)", lo=0)


@dataclass
class RunConfig:
    """What every run's `train:` section has, pre-training and downstream alike (declared here once)."""

    name: str = _f("", "run name; empty = <config file stem>-<time>")
    out_dir: str = _f("runs", "folder holding run folders")
    steps: int = _f(0, "run length in optimizer steps; overrides train.epochs when > 0", lo=0)
    precision: Precision = _f("bf16", "bf16 autocast (CPU/CUDA) or fp16 + grad scaler (CUDA)")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    log_every: int = _f(10, "steps between metric lines", lo=1)
    keep_checkpoints: int = _f(2, "checkpoints kept on disk", lo=1)
    tensorboard: bool = _f(True, "also write TensorBoard event files")
    max_steps: int = _f(0, "interrupt the run at this step with a checkpoint (0 = never); --resume continues the "
                        "same schedules", lo=0)
    threads: int = _f(0, "CPU threads of torch per process (0 = the process's share of the cores, less one per data "
                      "worker)", lo=0)
    channels_last: bool = _f(False, "images and conv weights in NHWC layout, which oneDNN and cuDNN run fastest (same "
                             "results; benchmarks/official_step.py measures it). Off by default: torch 2.14.1's CPU "
                             "kernels corrupt memory on 1x1 stride-2 convs of few channels at odd batch sizes")
    compile: bool = _f(False, "torch.compile the trained network (off: it did not pay on the development CPU, and its "
                       "losses part from eager ones by ~1e-3 after two steps; the first steps compile)")


@dataclass
class TrainConfig(RunConfig):
    epochs: float = _f(50.0, "run length in epochs, fractions allowed (2.5); every schedule spans exactly it",
                       lo=0, lo_open=True)
    batch_size: int = _f(512, "global batch (split evenly over processes)", lo=2)
    seed: int = _f(0, "seed of weights, data order and augmentation")
    sync_bn: bool = _f(True, "batch-norm statistics over the global batch when distributed")
    checkpoint_every: int = _f(1000, "steps between checkpoints (and one at the end)", lo=1)


@dataclass
class MonitorConfig:
    knn_train_root: str = _f("", "labelled class folders used as the kNN memory bank (empty = no kNN monitor)")
    knn_val_root: str = _f("", "labelled class folders classified by kNN")
    knn_every_epochs: int = _f(1, "epochs between kNN evaluations", lo=1)
    knn_at_start: bool = _f(True, "also evaluate before the first step (= the random-init network)")
    knn_k: int = _f(20, "neighbours", lo=1)
    knn_temperature: float = _f(0.07, "temperature of the similarity-weighted votes", lo=0, lo_open=True)
    knn_image_size: int = _f(0, "image side for kNN features (0 = data.image_size)", lo=0)
    verify_pairs: Literal["", "lfw", "cfp-fp", "cfp-ff"] = _f(
        "", "face-verification protocol monitored on the online trunk (empty = off; report: cfp-fp, code: lfw)"
    )
    verify_root: str = _f("", "dataset root of monitor.verify_pairs in its native layout")
    verify_every_epochs: int = _f(1, "epochs between verification evaluations", lo=1)


@dataclass
class PretrainSchema:
    """The sections every pre-training method shares. Each method adds its own (FRA's `loss`, MoCo v2's `moco`):
    `frafer.config.loader.PretrainConfig` is this plus the sections the method registry declares."""

    method: str = _f("fra", "pre-training method (`frafer methods` lists them); its own defaults apply under the "
                            "recipe")
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)


# --------------------------------------------------------------------------- downstream FER (docs/method.md §4)

@dataclass
class FERDataConfig:
    format: Literal["affectnet", "rafdb", "fer2013", "ferplus", "folders", "synthetic"] = _f(
        "folders", "native dataset layout of data.root"
    )
    root: str = _f("", "dataset root in its native layout")
    extra_roots: list[str] = _f([], "more roots merged into the same dataset (synthetic: one folder per split)")
    num_classes: int = _f(0, "classes of the head, 0 = every class the dataset has; AffectNet / FERPlus read 7 (no "
                          "contempt) or 8; elsewhere a check of the count", lo=0, hi=8)
    classes: list[str] = _f([], "train on these classes only (e.g. [happy,sad,surprise,fear,disgust,anger] for CK+ "
                            "without contempt); empty = every class the dataset has")
    fer2013_csv: str = _f("", "ferplus: fer2013.csv holding the pixels (empty = look in root and its parent)")
    ferplus_source: Literal["auto", "csv", "folders"] = _f(
        "auto", "ferplus: fer2013new.csv + fer2013.csv pixels, or the FERPlus label.csv folders"
    )
    subjects_csv: str = _f("", "folders: CSV with an 'image' column and 'subject' (and/or data.fold_column) columns")
    subject_pattern: str = _f("", "folders: regex whose first group, searched in the file name, is the subject")
    train_split: str = _f("train", "split trained on")
    val_split: str = _f("val", "split used for model selection; missing → carved from train (val_fraction)")
    test_split: str = _f("test", "split reported as the result (never used for selection)")
    val_fraction: float = _f(0.1, "share of train held out as validation when the dataset has no val split",
                             lo=0, hi=0.9)
    label_fraction: float = _f(1.0, "train on this share of the training labels: a fixed class-stratified subset "
                               "(data/fer/folds.py: label_subset), for few-label studies", lo=0, hi=1, lo_open=True)
    label_seed: int = _f(0, "seed of the label_fraction subset, independent of the training seed", lo=0)
    folds: int = _f(0, "subject-disjoint k-fold over train+val+test (0 = use the dataset's splits; -1 = leave one "
                    "subject out)", lo=-1)
    fold_column: str = _f("", "folders: column of data.subjects_csv holding the dataset's own folds (e.g. "
                          "fold10_by_subject); replaces data.folds")
    fold: int = _f(-1, "with folds: -1 = run every fold and report mean ± std; k = only fold k", lo=-1)
    crowd_mode: Literal["none", "majority", "multilabel", "probability", "crossentropy"] = _f(
        "none", "train on annotator votes (FERPlus, synthetic) in this mode; none = the dataset's labels"
    )
    image_size: int = _f(224, "side of the network input in pixels", lo=16)
    framing: Literal["", "fer2013", "rafdb", "affectnet", "synthetic", "box"] = _f(
        "", "how the training faces are framed, recorded in the bundle for predict (data/fer/framing.py presets; "
            "empty = the format's own: fer2013/ferplus tight grey, rafdb aligned, affectnet box, folders box)")
    num_workers: int = _f(8, "data loader worker processes", lo=0)
    balanced_sampler: bool = _f(False, "sample classes equally often in training (docs/method.md: on for AffectNet)")


@dataclass
class FERAugConfig:
    flip_p: float = _f(0.5, "horizontal flip probability", lo=0, hi=1)
    jitter: tuple[float, float, float, float] = _f(
        (0.4, 0.4, 0.4, 0.0), "colour jitter brightness, contrast, saturation, hue"
    )
    translate: float = _f(0.1, "random translation, as a fraction of the image side", lo=0, hi=0.5)
    rotate: float = _f(10.0, "random rotation range in degrees (±)", lo=0, hi=180)
    erase_p: float = _f(0.25, "random erasing probability", lo=0, hi=1)
    erase_scale: tuple[float, float] = _f((0.02, 0.25), "random erasing area range")
    mix: Literal["none", "mixup", "cutmix"] = _f(
        "none", "mix each training image with another of its batch (mixup: blend; cutmix: paste a box); the loss "
                "mixes the two targets' losses by the shares (data/pipelines/batch_mix.py)")
    mix_alpha: float = _f(1.0, "the mixed share is drawn from Beta(mix_alpha, mix_alpha)", lo=0,
                         lo_open=True)
    mean: tuple[float, float, float] = _mean()
    std: tuple[float, float, float] = _std()


@dataclass
class FERModelConfig:
    init: str = _f("none", "pre-trained weights: an FRA run / checkpoint, a torchvision-layout .safetensors or "
                   ".pth state dict, or none (random init)")
    arch: Arch = _f("resnet50", "trunk for init=none; with weights, the layout is read from the weights themselves")
    blocks: list[int] = _f([], "residual blocks per stage for init=none (empty = the arch's own)")
    width: int = _f(64, "first-stage channels for init=none", lo=1)
    remove_maxpool: bool = _f(False, "drop the stem max-pool (an FRA run's own setting wins when init is a run)")
    head_init_std: float = _f(0.01, "std of the new linear head's normal initialisation (bias 0)", lo=0)
    dropout: float = _f(0.0, "dropout before the linear head", lo=0, hi=1)
    keep_regions: bool = _f(True, "when init is an FRA run, keep its region model in the bundle (predict --heatmaps)")
    rescale_init: bool = _f(False, "scale every conv weight of a pre-trained trunk to the norm a fresh init has in "
                            "expectation (sqrt(2 x in_channels)), undoing pre-training's weight growth")
    head: Literal["finetune", "dmue"] = _f(
        "finetune", "how `frafer finetune` trains: a plain linear head, or DMUE's auxiliary branches and uncertainty "
                    "(dmue section); both deploy as the trunk + one linear head")


@dataclass
class FinetuneOptimConfig:
    lr: float = _f(2e-4, "AdamW learning rate of the trunk (the report used 4.89e-5)", lo=0, lo_open=True)
    head_lr: float = _f(0.0, "learning rate of the head (0 = same as lr)", lo=0)
    weight_decay: float = _f(0.05, "AdamW weight decay (not on biases and normalisation parameters)", lo=0)
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    warmup_epochs: float = _f(5.0, "linear warm-up epochs (per step)", lo=0)
    warmup_steps: int = _f(-1, "linear warm-up in steps (-1 = from optim.warmup_epochs)", lo=-1)
    min_lr: float = _f(1e-6, "learning rate at the end of the cosine", lo=0)
    label_smoothing: float = _f(0.0, "label smoothing of the cross-entropy", lo=0, hi=1)
    grad_clip: float = _f(0.0, "clip the global gradient norm to this value (0 = off)", lo=0)
    weight_ema: float = _f(0.0, "decay of an exponential moving average of the classifier's weights and BN "
                           "statistics, updated every step; validation, selection and the bundle use the average "
                           "(0 = off; 0.999 averages about the last 1000 steps)", lo=0, hi=0.99999)
    layer_decay: float = _f(1.0, "layer-wise LR decay: layer4 trains at lr, layer3 at lr*d, ..., the stem at lr*d^4 "
                            "(1 = off)", lo=0, lo_open=True, hi=1)
    fused: bool = _f(True, "AdamW as one fused kernel over all parameters (CPU and CUDA; 1.5x faster than torch's "
                     "per-parameter loop on the development CPU, benchmarks/finetune_step.py); false = that loop")


@dataclass
class DMUEConfig:
    temperature: float = _f(1.2, "T, softmax temperature of the mined latent distributions", lo=0, lo_open=True)
    omega: float = _f(0.5, "omega, weight of L_soft", lo=0)
    gamma: float = _f(1000.0, "gamma, weight of the similarity-preserving loss L_sp", lo=0)
    switch_epoch: float = _f(6.0, "beta (a), the epoch where w_u reaches 1 and w_d starts to fall (report and "
                             "AffectNet: 6; RAF-DB and FERPlus: about 10)", lo=0, lo_open=True)
    dropout: float = _f(0.5, "dropout before every branch's classifier", lo=0, hi=1)


@dataclass
class ProbeConfig:
    path: Literal["cached", "faithful"] = _f(
        "cached", "cached: features extracted once, head trained on them; faithful: frozen trunk with train aug"
    )
    flip_average: bool = _f(True, "cached path: average the features of each image and its mirror")
    feature_norm: bool = _f(True, "standardise features before the head (batch-norm without affine, folded into "
                            "the saved head); false = a plain linear layer on raw features")
    epochs: int = _f(100, "epochs of the linear head", lo=1)
    batch_size: int = _f(256, "batch of the linear head", lo=1)
    lr: float = _f(0.1, "SGD learning rate of the linear head (cosine, no warm-up)", lo=0, lo_open=True)
    momentum: float = _f(0.9, "SGD momentum", lo=0, hi=1)
    weight_decay: float = _f(0.0, "SGD weight decay of the linear head", lo=0)


@dataclass
class FinetuneTrainConfig(RunConfig):
    epochs: float = _f(100.0, "fine-tuning length in epochs, fractions allowed (2.5); every schedule spans exactly it",
                       lo=0, lo_open=True)
    batch_size: int = _f(256, "global batch (split evenly over processes)", lo=1)
    seed: int = _f(0, "seed of the head, data order, augmentation and crowd-label draws")
    select: Literal["last", "val"] = _f(
        "val", "also keep the epoch best on the validation split (the last epoch is always reported too)"
    )
    eval_every_epochs: int = _f(1, "epochs between validation passes (a checkpoint after each epoch)", lo=1)


@dataclass
class FinetuneConfig:
    data: FERDataConfig = field(default_factory=FERDataConfig)
    aug: FERAugConfig = field(default_factory=FERAugConfig)
    model: FERModelConfig = field(default_factory=FERModelConfig)
    optim: FinetuneOptimConfig = field(default_factory=FinetuneOptimConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    dmue: DMUEConfig = field(default_factory=DMUEConfig)
    train: FinetuneTrainConfig = field(default_factory=FinetuneTrainConfig)


def to_dict(cfg: Any) -> dict:
    """Config → plain dict (tuples as lists) suitable for YAML / JSON."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
