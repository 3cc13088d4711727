"""Conversion of checkpoints of the official Sparse R-CNN (PeizeSun/SparseR-CNN) and RecursiveDet
(bravezzzzzz/RecursiveDet, projects/SparseRCNN) code into this project's format; ``python -m
recursivedet.convert`` finds it through its host declaration (``host.py``).

Use the result with the matching config: ``SparseRCNN/models/sparse_rcnn.py`` (or a ``sparse_rcnn_*`` config) for
Sparse R-CNN checkpoints, ``SparseRCNN/models/recursivedet.py`` (or a ``recursivedet_*`` config) for RecursiveDet
ones, with the checkpoint's numbers of proposals, classes and stages. The backbone and proposal keys are identical
in both projects; only the decoder is renamed.
"""

import re

from recursivedet.errors import CheckpointFormatError

# What this module recognises, for the converter's message about a file it does not.
KNOWN_FORMAT = (
    "official Sparse R-CNN or RecursiveDet checkpoint: no 'head.head_series.*' or 'head.rcnn_head_first.*' keys"
)
# The model config (also a recursivedet.model_zoo name) that takes each converted architecture.
MODEL_CONFIGS = {"sparse_rcnn": "SparseRCNN/models/sparse_rcnn.py", "recursivedet": "SparseRCNN/models/recursivedet.py"}

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


def recognise(state_dict: dict) -> str | None:
    """ "sparse_rcnn" or "recursivedet" from the key names of an official state dict, None for anything else."""
    keys = list(state_dict)
    if any(k.startswith("head.time_mlp.") for k in keys):
        return None  # DiffusionDet's head keeps Sparse R-CNN's stage names, plus its time MLPs
    if any(_SPARSE_RCNN_STAGE.match(k) for k in keys):
        return "sparse_rcnn"
    if any(k.startswith("head.rcnn_head_first.") for k in keys) and any(k.startswith("head.rcnn_head.") for k in keys):
        return "recursivedet"
    return None


def detect_official_architecture(state_dict: dict) -> str:
    """:func:`recognise`, raising :class:`~recursivedet.errors.CheckpointFormatError` for anything else."""
    arch = recognise(state_dict)
    if arch is None:
        if any(k.startswith("decoder.stages.") for k in state_dict):
            raise CheckpointFormatError("this checkpoint is already in this project's format (decoder.stages.*)")
        sample = ", ".join(list(state_dict)[:5])
        raise CheckpointFormatError(f"not an {KNOWN_FORMAT} (first keys: {sample})")
    return arch


def rename_stage_key(rest: str, where: str) -> str:
    """The library name of an official Sparse R-CNN stage key ``rest`` (what follows the stage prefix; also
    DiffusionDet's stages); ``where``, the whole key, names it in the error for an unknown one."""
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
        converted[prefix + rename_stage_key(rest, key)] = value
    return converted
