"""Parameter and FLOP table of model configs next to the paper's figures.

    python -m recursivedet.analysis.model_cost                     # every ablation and main-result config (all hosts)
    python -m recursivedet.analysis.model_cost SparseRCNN/recursivedet_shapes_demo.py --no-flops
    python -m recursivedet.analysis.model_cost --input-size 800 1216 --json cost.json

Parameters per decoder-stage module are split into paper Table 1's categories (MSA, Dyn, Out, Head,
Others) plus the positional-encoding additions (PE). FLOPs are counted by detectron2's FlopCountAnalysis
(fvcore; one multiply-add = one FLOP, RoIAlign not counted) for one image of the stated size. With REGO
(``model.rego``), its parameters and FLOPs (included in the totals) are also reported on their own: the
"rego_params" and "rego_gflops" fields and the REGO columns.
"""

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections import OrderedDict

import torch
from detectron2.config import instantiate
from detectron2.utils.analysis import FlopCountAnalysis

from recursivedet.engine.cli import load_config
from recursivedet.model_zoo import get_config_file

from .paper_rows import paper_rows as declared_paper_rows

# Decoder-stage parameter name prefixes of each paper Table 1 category; anything else is "Others".
# AdaMixer's stage (projects/AdaMixer): self_attn.attn (MSA), adaptive_mixing (Dyn, Out), PE in self_attn and mixing_pe.
STAGE_CATEGORIES = OrderedDict(
    MSA=(
        "self_attn.q_content_proj.",
        "self_attn.k_content_proj.",
        "self_attn.v_proj.",
        "self_attn.out_proj.",
        "self_attn.attn.",
    ),
    Dyn=("dynamic_conv.dynamic_layer.", "adaptive_mixing.dynamic_layer."),
    Out=("dynamic_conv.out_layer.", "adaptive_mixing.out_layer."),
    Head=("cls_layers.", "reg_layers.", "class_logits.", "box_delta."),
    PE=(
        "box_pos_mlp.",
        "self_attn.box_pos_mlp.",
        "mixing_pe.",
        "self_attn.q_pos_proj.",
        "self_attn.k_pos_proj.",
        "dynamic_conv.center_scale.",
        "dynamic_conv.size_ref.",
        "dynamic_conv.roi_pos_proj.",
        "dynamic_conv.kernel_pos_proj.",
        "dynamic_conv.position_channels",
        "dynamic_conv.centerness.",
    ),
)


def stage_breakdown(stage: torch.nn.Module) -> dict[str, int]:
    """Parameters of one decoder-stage module by Table 1 category (+ PE, Total)."""
    counts = dict.fromkeys([*STAGE_CATEGORIES, "Others"], 0)
    for name, p in stage.named_parameters():
        category = next((c for c, prefixes in STAGE_CATEGORIES.items() if name.startswith(prefixes)), "Others")
        counts[category] += p.numel()
    counts["Total"] = sum(counts.values())
    return counts


def _sdpa_flop_jit(inputs, outputs):
    """Multiply-adds of scaled_dot_product_attention: Q K^T and A V."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for s in q[:-2]:
        batch *= s
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def flops_by_module(model, height: int, width: int) -> dict[str, float]:
    """GFLOPs of one forward pass on a (3, height, width) image (inference mode) spent in each submodule,
    by qualified name ("" = the whole model, "rego" = REGO)."""
    model.eval()
    inputs = [{"image": torch.zeros(3, height, width, dtype=torch.uint8), "height": height, "width": width}]
    with torch.no_grad():
        flops = FlopCountAnalysis(model, inputs)
        flops.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
        flops.unsupported_ops_warnings(False)
        flops.uncalled_modules_warnings(False)
        # detectron2's FlopCountAnalysis traces the model through a wrapper that holds it as "model".
        counts = {name.removeprefix("model."): n for name, n in flops.by_module().items() if name.startswith("model.")}
        return {"": flops.total() / 1e9, **{name: n / 1e9 for name, n in counts.items()}}


def model_cost(config, input_size=(800, 1216), with_flops: bool = True, overrides: tuple[str, ...] = ()) -> dict:
    """Parameters (total, backbone, per decoder-stage module by category) and FLOPs of a config's model
    (``config``: a config name or file, see :mod:`recursivedet.model_zoo`; ``overrides``: ``key=value``)."""
    cfg = load_config(str(config), list(overrides))
    # Counting parameters needs no values: without FLOPs the model is built on the meta device, in a blink (and
    # pretrained weights loaded while it is built are not copied, which torch would warn about for each tensor).
    with contextlib.nullcontext() if with_flops else torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        model = instantiate(cfg.model)
    result = {
        "config": str(config),
        "overrides": list(overrides),
        "params": sum(p.numel() for p in model.parameters()),
        "backbone_params": sum(p.numel() for p in model.backbone.parameters()),
        "stage_modules": [stage_breakdown(s) for s in model.decoder.stages],
        "num_stages": model.decoder.num_stages,
        "rego_params": sum(p.numel() for p in rego.parameters()) if (rego := getattr(model, "rego", None)) else 0,
    }
    if with_flops:
        flops = flops_by_module(model, *input_size)
        result["gflops"] = flops[""]
        result["input_size"] = list(input_size)
        if getattr(model, "rego", None) is not None:
            # As inferred: 0 when REGO is trained but skipped at inference (REGO Table 4).
            result["rego_gflops"] = flops.get("rego", 0.0)
    return result


def _fmt_m(n) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}"


def format_table(rows: list[tuple]) -> str:
    """rows: (paper row or None, cost dict). A fixed-width text table (a row without a paper row is named by its
    config)."""
    labels = [paper.label if paper else cost["config"] for paper, cost in rows]
    width = max([28, *map(len, labels)])
    head = f"{'table':8} {'row':{width}} {'params(M)':>9} {'paper':>6} {'GFLOPs':>7} {'paper':>6} "
    head += f"{'REGO(M)':>7} {'REGO GF':>7}  stage modules (M): "
    head += " ".join(f"{c:>6}" for c in [*STAGE_CATEGORIES, "Others", "Total"])
    lines = [head, "-" * len(head)]
    for (paper, cost), label in zip(rows, labels, strict=True):
        stage = cost["stage_modules"][-1]
        gflops = f"{cost['gflops']:7.1f}" if "gflops" in cost else f"{'-':>7}"
        rego_params = f"{cost['rego_params'] / 1e6:7.2f}" if cost.get("rego_params") else f"{'-':>7}"
        rego_gflops = f"{cost['rego_gflops']:7.2f}" if "rego_gflops" in cost else f"{'-':>7}"
        lines.append(
            f"{paper.table if paper else '':8} {label:{width}} "
            f"{cost['params'] / 1e6:9.2f} {paper.params_m if paper and paper.params_m else '-':>6} {gflops} "
            f"{paper.gflops if paper and paper.gflops else '-':>6} {rego_params} {rego_gflops}  "
            f"x{len(cost['stage_modules'])}: " + " ".join(f"{_fmt_m(stage[c]):>6}" for c in stage)
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="*", help="config names or files (default: every paper row's config)")
    parser.add_argument("--input-size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    parser.add_argument("--no-flops", action="store_true", help="parameters only (fast)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every row (repeatable), e.g. model.decoder.stage.dynamic_conv_pe_form=official",
    )
    args = parser.parse_args(argv)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    paper_rows = [r for group in ("ablation", "main", "swin") for r in declared_paper_rows(group)]
    if args.configs:
        # a config given by name or path that is a paper row's config is shown with that row's figures
        by_file = {get_config_file(row.config): row for row in reversed(paper_rows)}
        targets = [(by_file.get(get_config_file(path)), path) for path in args.configs]
    else:
        targets = [(row, row.config) for row in paper_rows]
    rows = []
    cache = {}
    for paper, path in targets:
        key = str(path)
        if key not in cache:
            cache[key] = model_cost(path, args.input_size, not args.no_flops, tuple(args.override))
        rows.append((paper, cache[key]))
    print(f"FLOPs for one 3x{args.input_size[0]}x{args.input_size[1]} image; stage modules: the last one's breakdown")
    if args.override:
        print("overrides of every row: " + " ".join(args.override))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"paper": paper.__dict__ if paper else None, **cost} for paper, cost in rows], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
