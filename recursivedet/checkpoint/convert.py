"""Convert checkpoints of the official Sparse R-CNN (PeizeSun/SparseR-CNN) and RecursiveDet
(bravezzzzzz/RecursiveDet) code into this project's format.

    python -m recursivedet.checkpoint.convert official.pth converted.pth

Use the result with the matching config: ``configs/models/sparse_rcnn.py`` for Sparse R-CNN checkpoints,
``configs/models/recursivedet.py`` for RecursiveDet ones (same number of proposals, classes and stages as
the checkpoint). The backbone and proposal keys are identical in both projects; only the decoder is renamed.
"""

import argparse
import os
import re

import torch

from recursivedet.engine.checkpoint import CheckpointError, atomic_write, load_checkpoint
from recursivedet.errors import UserError, run_command


class CheckpointFormatError(UserError, ValueError):
    """The checkpoint is not one the converter knows."""


# Official decoder-stage key -> this project's key, for both official codebases.
_STAGE_RENAMES = [
    ("pos_xywh.layers.", "box_pos_mlp.layers."),
    ("sa_qcontent_proj.", "self_attn.q_content_proj."),
    ("sa_qpos_proj.", "self_attn.q_pos_proj."),
    ("sa_kcontent_proj.", "self_attn.k_content_proj."),
    ("sa_kpos_proj.", "self_attn.k_pos_proj."),
    ("sa_v_proj.", "self_attn.v_proj."),
    ("self_attn.out_proj.", "self_attn.out_proj."),
    ("inst_interact.query_scale.layers.", "dynamic_conv.center_scale.layers."),
    ("inst_interact.ref_point_head.layers.", "dynamic_conv.size_ref.layers."),
    ("inst_interact.ca_qpos_proj.", "dynamic_conv.roi_pos_proj."),
    ("inst_interact.ca_kpos_proj.", "dynamic_conv.kernel_pos_proj."),
    ("inst_interact.", "dynamic_conv."),
    ("cls_module.", "cls_layers."),
    ("reg_module.", "reg_layers."),
    ("bboxes_delta.", "box_delta."),
    ("linear1.", "linear1."),
    ("linear2.", "linear2."),
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
    ("norm3.", "norm3."),
    ("class_logits.", "class_logits."),
]

_SPARSE_RCNN_STAGE = re.compile(r"^head\.head_series\.(\d+)\.(.*)$")
_RECURSIVEDET_STAGE = re.compile(r"^head\.rcnn_head(_first)?\.(.*)$")


def detect_official_architecture(state_dict: dict) -> str:
    """Return "sparse_rcnn" or "recursivedet" from the key names; raise for anything else."""
    keys = list(state_dict)
    if any(_SPARSE_RCNN_STAGE.match(k) for k in keys):
        return "sparse_rcnn"
    if any(k.startswith("head.rcnn_head_first.") for k in keys) and any(k.startswith("head.rcnn_head.") for k in keys):
        return "recursivedet"
    if any(k.startswith("decoder.stages.") for k in keys):
        raise CheckpointFormatError("this checkpoint is already in this project's format (decoder.stages.*)")
    sample = ", ".join(keys[:5])
    raise CheckpointFormatError(
        "not an official Sparse R-CNN or RecursiveDet checkpoint: no 'head.head_series.*' or "
        f"'head.rcnn_head_first.*' keys (first keys: {sample})"
    )


def _rename_stage_key(rest: str, where: str) -> str:
    for old, new in _STAGE_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old) :]
    raise CheckpointFormatError(f"unknown decoder key {where!r} in the official checkpoint")


def convert_official_state_dict(state_dict: dict) -> dict:
    """Official state dict -> this project's state dict (tensors shared, not copied).

    Sparse R-CNN's ``nn.MultiheadAttention`` packs the query, key and value projections in one
    ``in_proj``; they are split into the three content projections used here.
    """
    arch = detect_official_architecture(state_dict)
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("head.box_pooler") or key == "pos_local":
            continue  # no parameters; buffers recomputed here
        if not key.startswith("head."):
            converted[key] = value  # backbone.*, init_proposal_features/boxes: same names
            continue
        if arch == "sparse_rcnn":
            match = _SPARSE_RCNN_STAGE.match(key)
            index = match.group(1) if match else None
            rest = match.group(2) if match else None
        else:
            match = _RECURSIVEDET_STAGE.match(key)
            index = ("0" if match.group(1) else "1") if match else None
            rest = match.group(2) if match else None
        if match is None:
            raise CheckpointFormatError(f"unknown key {key!r} in the official {arch} checkpoint")
        prefix = f"decoder.stages.{index}."
        if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip(("q_content_proj", "k_content_proj", "v_proj"), value.chunk(3), strict=True):
                converted[f"{prefix}self_attn.{name}.{kind}"] = part
            continue
        converted[prefix + _rename_stage_key(rest, key)] = value
    return converted


def load_checkpoint_file(path: str) -> dict:
    """The state dict inside a detectron2-style checkpoint ({"model": ...}) or a bare state dict. The file
    is read with ``torch.load(weights_only=True)``: nothing it contains is executed."""
    data = load_checkpoint(path)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return data["model"]
    if isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        return data
    raise CheckpointFormatError(f"{path} holds no state dict (expected a dict of tensors or {{'model': ...}})")


def check_output_path(path: str) -> None:
    """Refuse an output path that cannot be written, before the conversion. A missing folder is not
    created: it is more often a typo than a wish for a new folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CheckpointError(f"output {path} is a directory; give the path of the .pth file to write")
    if not os.path.isdir(folder):
        what = "is not a directory" if os.path.exists(folder) else "does not exist"
        raise CheckpointError(f"cannot write {path}: its folder {folder} {what} (create it first)")
    if not os.access(folder, os.W_OK):
        raise CheckpointError(f"cannot write {path}: no permission to write in {folder}")


def main(argv=None) -> int:
    """The command line; raises a :class:`~recursivedet.errors.UserError` for any problem of the input
    (``run_command`` reports it as one ``error:`` line, exit status 2)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="official checkpoint (.pth)")
    parser.add_argument("target", help="where to write the converted checkpoint (.pth); its folder must exist")
    args = parser.parse_args(argv)
    check_output_path(args.target)
    state = load_checkpoint_file(args.source)
    arch = detect_official_architecture(state)
    converted = convert_official_state_dict(state)
    # atomic: a failed or interrupted write leaves no partial checkpoint behind
    atomic_write(args.target, lambda f: torch.save({"model": converted, "converted_from": arch}, f))
    config = {"sparse_rcnn": "configs/models/sparse_rcnn.py", "recursivedet": "configs/models/recursivedet.py"}[arch]
    print(f"converted an official {arch} checkpoint ({len(converted)} tensors) to {args.target}; use it with {config}")
    return 0


if __name__ == "__main__":
    run_command(main)
