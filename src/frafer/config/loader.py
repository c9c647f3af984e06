"""Reading a configuration: YAML recipes (with `base:`), dotted `key=value` overrides, typed building and checks.

A mistake (unknown key, wrong type, impossible value) raises FraferError naming the key and what is allowed.
Pre-training's schema is assembled here from the shared sections and the ones each method declares
(`Method.sections`), and each method's own rules run through `Method.check`: adding a method touches its file only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml

from frafer.config.schema import FinetuneConfig, PretrainSchema, to_dict
from frafer.errors import FraferError
from frafer.methods import METHODS, get_method


def _pretrain_schema() -> type:
    """PretrainSchema plus every method's own sections, each under the name its method gives it."""
    sections: dict[str, type] = {}
    for method in METHODS.values():
        for name, section in method.sections.items():
            if name in sections and sections[name] is not section or name in PretrainSchema.__dataclass_fields__:
                raise TypeError(f"method {method.name}: config section '{name}' is already taken")
            sections[name] = section
    fields = [(name, section, field(default_factory=section)) for name, section in sections.items()]
    cls = dataclasses.make_dataclass("PretrainConfig", fields, bases=(PretrainSchema,))
    cls.__module__ = __name__
    cls.__doc__ = "A pre-training run's configuration: the shared sections and every method's own."
    return cls


PretrainConfig = _pretrain_schema()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = typing.get_args(tp)
        inner = _type_name(args[0]) if args else "value"
        n = "" if origin is list or (len(args) == 2 and args[1] is Ellipsis) else f" of {len(args)}"
        return f"list{n} of {inner}"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the annotated type `tp`, converting where unambiguous (int → float, list → tuple)."""
    origin = typing.get_origin(tp)
    bad = FraferError(f"config key '{key}': expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise FraferError(f"config key '{key}': must be one of {_type_name(tp)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise FraferError(f"config key '{key}': expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(key, v, a) for v, a in zip(value, args, strict=True))
        return origin(_coerce(key, v, args[0]) for v in value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in the schema ({key})")
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad
        return str(value)
    raise TypeError(f"unsupported schema type {tp!r} for {key}")


def _check_bounds(key: str, value: Any, meta: dict) -> None:
    lo, hi = meta.get("lo"), meta.get("hi")
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        too_low = lo is not None and (v <= lo if meta.get("lo_open") else v < lo)
        too_high = hi is not None and v > hi
        if too_low or too_high:
            left = "(" if meta.get("lo_open") else "["
            rng = f"{left}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise FraferError(f"config key '{key}': {v!r} is outside the allowed range {rng}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise FraferError(f"config key '{prefix.rstrip('.') or '<root>'}': expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = prefix + str(unknown[0])
        raise FraferError(f"unknown config key '{key}' (known here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        key, tp = prefix + name, hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, key + ".")
        else:
            kwargs[name] = _coerce(key, value, tp)
            _check_bounds(key, kwargs[name], fields[name].metadata)
    return cls(**kwargs)


def _validate_std_and_blocks(cfg) -> None:
    """Rules both schemas share: a positive normalisation std and, when given, four positive stage depths."""
    if any(s <= 0 for s in cfg.aug.std):
        raise FraferError(f"config key 'aug.std': must be positive, got {cfg.aug.std}")
    if cfg.model.blocks and (len(cfg.model.blocks) != 4 or min(cfg.model.blocks) < 1):
        raise FraferError(f"config key 'model.blocks': need 4 positive counts, got {cfg.model.blocks}")


def _validate(cfg: PretrainConfig) -> None:
    """Cross-field rules that no single field can express."""
    lo, hi = cfg.aug.crop_scale
    if not 0 < lo <= hi <= 1:
        raise FraferError(f"config key 'aug.crop_scale': need 0 < min <= max <= 1, got {cfg.aug.crop_scale}")
    for name in ("blur_p", "solarize_p"):
        for p in getattr(cfg.aug, name):
            if not 0 <= p <= 1:
                raise FraferError(f"config key 'aug.{name}': probabilities must lie in [0, 1], got {p}")
    if not 0 < cfg.aug.blur_sigma[0] <= cfg.aug.blur_sigma[1]:
        raise FraferError(f"config key 'aug.blur_sigma': need 0 < min <= max, got {cfg.aug.blur_sigma}")
    _validate_std_and_blocks(cfg)
    if cfg.model.query_dim % cfg.model.decoder_heads:
        raise FraferError(
            f"config key 'model.decoder_heads': {cfg.model.decoder_heads} must divide model.query_dim "
            f"({cfg.model.query_dim})"
        )
    if cfg.optim.ema_final < cfg.optim.ema_base:
        raise FraferError("config key 'optim.ema_final': must be >= optim.ema_base")
    _validate_method(cfg)
    if cfg.data.source in ("folder", "vggface2") and not cfg.data.root:
        raise FraferError(f"config key 'data.root': required for data.source={cfg.data.source}")
    if bool(cfg.monitor.verify_pairs) != bool(cfg.monitor.verify_root):
        raise FraferError("config keys 'monitor.verify_pairs' and 'monitor.verify_root' go together")
    if bool(cfg.monitor.knn_train_root) != bool(cfg.monitor.knn_val_root):
        raise FraferError("config keys 'monitor.knn_train_root' and 'monitor.knn_val_root' go together")


def _validate_method(cfg: PretrainConfig) -> None:
    """The method's own rules, and its sections are its alone: FRA's loss weights set in a BYOL run would be
    silently unused, so a section another method owns must keep its defaults."""
    method = get_method(cfg.method)
    for other in METHODS.values():
        for section, schema in other.sections.items():
            if section in method.sections:
                continue
            changed = [k for k, v in to_dict(getattr(cfg, section)).items() if v != to_dict(schema())[k]]
            if changed:
                raise FraferError(f"config key '{section}.{changed[0]}': belongs to method {other.name}, not "
                                  f"method={cfg.method} (which has no use for it); remove it or choose that method")
    method.check(cfg)


def _validate_finetune(cfg: FinetuneConfig) -> None:
    if not cfg.data.root:
        raise FraferError("config key 'data.root': required (the dataset's folder in its native layout)")
    if cfg.data.folds > 0 and cfg.data.fold >= cfg.data.folds:
        raise FraferError(f"config key 'data.fold': {cfg.data.fold} must be below data.folds={cfg.data.folds}")
    if cfg.data.fold_column and (cfg.data.folds or cfg.data.format != "folders" or not cfg.data.subjects_csv):
        raise FraferError("config key 'data.fold_column': needs data.format=folders and data.subjects_csv (the CSV "
                          "holding the column), and replaces data.folds (leave it 0)")
    if cfg.data.folds == 1:
        raise FraferError("config key 'data.folds': k-fold needs at least 2 folds (or -1 = leave one subject out)")
    lo, hi = cfg.aug.erase_scale
    if not 0 < lo <= hi < 1:
        raise FraferError(f"config key 'aug.erase_scale': need 0 < min <= max < 1, got {cfg.aug.erase_scale}")
    _validate_std_and_blocks(cfg)
    if cfg.data.crowd_mode != "none" and cfg.data.format not in ("ferplus", "synthetic"):
        raise FraferError(
            f"config key 'data.crowd_mode': {cfg.data.crowd_mode} needs annotator votes, which only the ferplus and "
            f"synthetic formats carry (data.format={cfg.data.format})"
        )
    if cfg.aug.mix != "none" and cfg.model.head == "dmue":
        raise FraferError("config key 'aug.mix': DMUE mines a label distribution per image and weighs images by "
                          "their pairs; a mixed image has two labels (use aug.mix=none with model.head=dmue)")
    if cfg.data.crowd_mode == "multilabel" and cfg.optim.label_smoothing:
        raise FraferError("config key 'optim.label_smoothing': crowd_mode=multilabel accepts any of several classes "
                          "and has no single target to smooth; set it to 0")


def parse_override(text: str) -> tuple[str, Any]:
    """`a.b=3` → ("a.b", 3); the value is read as YAML, so `x=[1,2]`, `x=true`, `x=1e-3` work."""
    if "=" not in text:
        raise FraferError(f"override '{text}': expected key=value, e.g. optim.base_lr=0.5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise FraferError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise FraferError(f"config key '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def read_yaml(path: str | Path, _within: tuple[Path, ...] = ()) -> dict:
    """A recipe as a plain tree. `base: other.yaml` (relative to the recipe) starts it from another recipe's tree,
    section by section, so blocks several recipes share are written once."""
    path = Path(path)
    if not path.is_file():
        raise FraferError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise FraferError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise FraferError(f"config file {path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise FraferError(f"config file {path}: 'base' must name another recipe file, got {base!r}")
    base_path = path.parent / base
    if base_path.resolve() in (*_within, path.resolve()):
        raise FraferError(f"config file {path}: 'base: {base}' leads back to itself")
    return _merge(read_yaml(base_path, (*_within, path.resolve())), data)


def _merge(base: dict, top: dict) -> dict:
    """`top` over `base`, section by section."""
    out = _deep_copy(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _with_method_defaults(tree: dict) -> dict:
    """The recipe over its method's own defaults (MoCo v2's SGD and augmentation, …) over the schema's."""
    name = tree.get("method", "fra")
    if not isinstance(name, str):
        raise FraferError(f"config key 'method': expected a name, got {name!r}")
    return _merge(get_method(name).defaults, tree)


def build_config(tree: dict, overrides: list[str] = (), cls: type = PretrainConfig) -> Any:
    """Plain nested dict (+ dotted overrides) → validated config dataclass."""
    tree = _deep_copy(tree)
    for text in overrides:
        _set_dotted(tree, *parse_override(text))
    if cls is PretrainConfig:
        tree = _with_method_defaults(tree)
    cfg = _build(cls, tree, "")
    if isinstance(cfg, PretrainConfig):
        _validate(cfg)
    if isinstance(cfg, FinetuneConfig):
        _validate_finetune(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = (), cls: type = PretrainConfig) -> Any:
    """Load a YAML recipe (or the schema defaults when path is None) and apply `key=value` overrides."""
    return build_config(read_yaml(path) if path else {}, overrides, cls)


def describe(cls: type = PretrainConfig, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted key, default, help) for every field: the schema's own documentation."""
    rows = []
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe(tp, prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, getattr(default, f.name), f.metadata.get("help", "")))
    return rows


def _deep_copy(tree: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in tree.items()}
