"""Conversion of checkpoints of the official AdaMixer code (MCG-NJU/AdaMixer, mmdet 2.12) into this project's
format; ``python -m recursivedet.convert`` finds it through its host declaration (``host.py``).

Use the result with an AdaMixer config (``AdaMixer/adamixer_R50_300pro_3x.py``, or ``AdaMixer/models/adamixer.py``)
with the checkpoint's numbers of queries, classes and stages. The mmdet ResNet names become detectron2's
(``layer1`` -> ``res2``, ``bn1`` -> ``conv1.norm``, ``downsample`` -> ``shortcut``), the neck's convs and
GroupNorm the :class:`~.modeling.neck.ChannelMapping`'s, and each ``roi_head.bbox_head.{t}`` a decoder stage.
"""

import re

from recursivedet.errors import CheckpointFormatError

KNOWN_FORMAT = "official AdaMixer checkpoint: no 'roi_head.bbox_head.*.sampling_n_mixing.*' keys"
MODEL_CONFIGS = {"adamixer": "AdaMixer/models/adamixer.py"}

_STAGE = re.compile(r"^roi_head\.bbox_head\.(\d+)\.(.*)$")
# official stage module names -> this project's (prefix match, first hit)
_STAGE_NAMES = (
    ("iof_tau", "self_attn.iof_tau"),
    ("attention.attn.", "self_attn.attn."),
    ("attention_norm.", "self_attn.norm."),
    ("ffn.layers.0.0.", "linear1."),
    ("ffn.layers.1.", "linear2."),
    ("ffn_norm.", "norm3."),
    ("cls_fcs.", "cls_layers."),
    ("reg_fcs.", "reg_layers."),
    ("fc_cls.", "class_logits."),
    ("fc_reg.", "box_delta."),
    ("sampling_n_mixing.sampling_offset_generator.0.", "sampling.offset_generator."),
    ("sampling_n_mixing.norm.", "norm2."),
    ("sampling_n_mixing.adaptive_mixing.parameter_generator.0.", "adaptive_mixing.dynamic_layer."),
    ("sampling_n_mixing.adaptive_mixing.out_proj.", "adaptive_mixing.out_layer."),
)
_OTHER_NAMES = (
    ("rpn_head.init_proposal_bboxes.", "init_proposal_boxes."),
    ("rpn_head.init_content_features.", "init_proposal_features."),
    ("neck.gn_out.", "backbone.norm."),
)
_NECK_CONV = re.compile(r"^neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$")
_RESNET_BLOCK = re.compile(r"^backbone\.layer(\d)\.(\d+)\.(.*)$")


def recognise(state_dict: dict) -> str | None:
    """ "adamixer" from the key names of an official AdaMixer state dict, None for anything else."""
    if any(k.startswith("roi_head.bbox_head.") and ".sampling_n_mixing." in k for k in state_dict):
        return "adamixer"
    return None


def _resnet_key(key: str) -> str:
    """An mmdet ResNet key -> detectron2's ResNet key under ``backbone.bottom_up``."""
    rest = key[len("backbone.") :]
    if rest.startswith("conv1."):
        return "backbone.bottom_up.stem." + rest
    if rest.startswith("bn1."):
        return "backbone.bottom_up.stem.conv1.norm." + rest[len("bn1.") :]
    match = _RESNET_BLOCK.match(key)
    if match is None:
        raise CheckpointFormatError(f"unknown backbone key {key!r} in the official AdaMixer checkpoint")
    stage, block, name = int(match.group(1)) + 1, match.group(2), match.group(3)
    name = re.sub(r"^bn(\d)\.", r"conv\1.norm.", name)
    name = name.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
    return f"backbone.bottom_up.res{stage}.{block}.{name}"


def convert_official_state_dict(state_dict: dict) -> dict:
    """Official AdaMixer state dict -> this project's (tensors shared, not copied)."""
    if recognise(state_dict) is None:
        sample = ", ".join(list(state_dict)[:5])
        raise CheckpointFormatError(f"not an {KNOWN_FORMAT} (first keys: {sample})")
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            converted[_resnet_key(key)] = value
            continue
        if (conv := _NECK_CONV.match(key)) is not None:
            converted[f"backbone.lateral_convs.{conv.group(1)}.{conv.group(2)}"] = value
            continue
        other = next((new + key[len(old) :] for old, new in _OTHER_NAMES if key.startswith(old)), None)
        if other is not None:
            converted[other] = value
            continue
        stage = _STAGE.match(key)
        name = None
        if stage is not None:
            rest = stage.group(2)
            name = next((new + rest[len(old) :] for old, new in _STAGE_NAMES if rest.startswith(old)), None)
        if name is None:
            raise CheckpointFormatError(f"unknown key {key!r} in the official AdaMixer checkpoint")
        converted[f"decoder.stages.{stage.group(1)}.{name}"] = value
    return converted
