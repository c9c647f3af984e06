"""frafer's query decoder against the official FRA code's, on the same weights and input: the largest difference.

Needs a checkout of the official code (github.com/zaczgao/Facial_Region_Awareness, commit 791434b, CC-BY-NC) in a
scratch folder; nothing of it is copied into frafer. Its `fvcore` import (used only to initialise a projection this
check overwrites) is stood in for, so fvcore need not be installed.

    git -C <mirror> archive 791434b models | tar x -C /tmp/official
    .venv/bin/python benchmarks/official_decoder_parity.py --official /tmp/official --layers 2
"""

from __future__ import annotations

import argparse
import sys
import types

import torch

from frafer.models.query_decoder import QueryDecoder


def _official_predictor(root: str):
    weight_init = types.ModuleType("fvcore.nn.weight_init")
    weight_init.c2_xavier_fill = lambda m: None  # its weights are replaced by frafer's below
    fvcore, fvcore_nn = types.ModuleType("fvcore"), types.ModuleType("fvcore.nn")
    fvcore.nn, fvcore_nn.weight_init = fvcore_nn, weight_init
    sys.modules.update({"fvcore": fvcore, "fvcore.nn": fvcore_nn, "fvcore.nn.weight_init": weight_init})
    sys.path.insert(0, f"{root}/models")
    from transformers.transformer_predictor import TransformerPredictor

    return TransformerPredictor


def official_names(layers: int) -> dict[str, str]:
    """frafer parameter name → the official TransformerPredictor's."""
    names = {"input_proj.weight": "input_proj.weight", "input_proj.bias": "input_proj.bias",
             "queries": "query_embed.weight", "norm.weight": "transformer.decoder.norm.weight",
             "norm.bias": "transformer.decoder.norm.bias"}
    for i in range(3):
        for p in ("weight", "bias"):
            names[f"mask_mlp.{2 * i}.{p}"] = f"mask_embed.layers.{i}.{p}"
    for k in range(layers):
        ours, theirs = f"layers.{k}.", f"transformer.decoder.layers.{k}."
        for a, b in (("self_attn", "self_attn"), ("cross_attn", "multihead_attn")):
            for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
                names[ours + f"{a}.{p}"] = theirs + f"{b}.{p}"
        for a, b in (("ffn.0", "linear1"), ("ffn.3", "linear2"), ("norm1", "norm1"), ("norm2", "norm2"),
                     ("norm3", "norm3")):
            for p in ("weight", "bias"):
                names[ours + f"{a}.{p}"] = theirs + f"{b}.{p}"
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--official", required=True, help="folder holding the official code's models/")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--channels", type=int, default=512)
    p.add_argument("--dim", type=int, default=256)
    args = p.parse_args()
    torch.manual_seed(0)
    theirs = _official_predictor(args.official)(
        in_channels=args.channels, hidden_dim=args.dim, num_queries=8, nheads=8, dropout=0.0,
        dim_feedforward=args.dim, enc_layers=0, dec_layers=args.layers, pre_norm=False, deep_supervision=False,
        mask_dim=args.dim, enforce_input_project=False, mask_classification=False, num_classes=0).eval()
    ours = QueryDecoder(args.channels, args.dim, args.dim, 8, args.layers, 8, args.dim, dropout=0.0).eval()
    state = theirs.state_dict()
    ours.load_state_dict({k: state[v] for k, v in official_names(args.layers).items()})
    x = torch.randn(4, args.channels, 7, 7)
    with torch.no_grad():
        a, b = ours(x), theirs(x)["mask_embed"]
    print(f"{args.layers} decoder layers, {args.channels}→{args.dim}, 7×7: max |frafer − official| = "
          f"{(a - b).abs().max().item():.2e} (outputs up to {b.abs().max().item():.2f})")


if __name__ == "__main__":
    main()
