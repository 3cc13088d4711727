"""Conversion of checkpoints of the official DiffusionDet code (ShoufaChen/DiffusionDet) into this project's
format; ``python -m recursivedet.convert`` finds it through its host declaration (``host.py``).

Use the result with a DiffusionDet config (``DiffusionDet/models/diffusiondet.py``, or
``DiffusionDet/diffusiondet_R50_500pro_60ep.py``) with the checkpoint's numbers of classes and stages. The
backbone keys are identical (both are detectron2 ResNet-FPNs); the diffusion schedule buffers are dropped (they
are rebuilt from the config); the stages are renamed as the official Sparse R-CNN ones, plus the time MLPs.
"""

import re

from recursivedet.errors import CheckpointFormatError
from recursivedet.projects.SparseRCNN.convert import rename_stage_key

KNOWN_FORMAT = "official DiffusionDet checkpoint: no 'head.time_mlp.*' with 'head.head_series.*' keys"
MODEL_CONFIGS = {"diffusiondet": "DiffusionDet/models/diffusiondet.py"}

# Buffers of the official detector: the cosine schedule and its derived quantities (not parameters).
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
# The global time MLP: official Sequential(sinusoid, Linear, GELU, Linear) -> TimeEmbedding.layers (Linear, GELU,
# Linear).
_TIME_MLP = {"head.time_mlp.1.": "time_mlp.layers.0.", "head.time_mlp.3.": "time_mlp.layers.2."}
_STAGE = re.compile(r"^head\.head_series\.(\d+)\.(.*)$")


def recognise(state_dict: dict) -> str | None:
    """ "diffusiondet" from the key names of an official DiffusionDet state dict, None for anything else."""
    keys = list(state_dict)
    if any(k.startswith("head.time_mlp.") for k in keys) and any(_STAGE.match(k) for k in keys):
        return "diffusiondet"
    return None


def convert_official_state_dict(state_dict: dict) -> dict:
    """Official DiffusionDet state dict -> this project's (tensors shared, not copied).

    The self-attention's packed ``in_proj`` is split into the query, key and value projections; each stage's
    ``block_time_mlp`` becomes its ``condition_mlp``.
    """
    if recognise(state_dict) is None:
        sample = ", ".join(list(state_dict)[:5])
        raise CheckpointFormatError(f"not an {KNOWN_FORMAT} (first keys: {sample})")
    if "alphas_cumprod" in state_dict and len(state_dict["alphas_cumprod"]) != 1000:
        raise CheckpointFormatError(
            f"the checkpoint's diffusion has {len(state_dict['alphas_cumprod'])} timesteps; the configs use 1000 "
            "(set model.diffusion.timesteps)"
        )
    converted = {}
    for key, value in state_dict.items():
        if key in SCHEDULE_BUFFERS or key.startswith("head.box_pooler"):
            continue
        if not key.startswith("head."):
            converted[key] = value  # backbone.*: same names
            continue
        time = next((new + key[len(old) :] for old, new in _TIME_MLP.items() if key.startswith(old)), None)
        if time is not None:
            converted[time] = value
            continue
        match = _STAGE.match(key)
        if match is None:
            raise CheckpointFormatError(f"unknown key {key!r} in the official DiffusionDet checkpoint")
        prefix, rest = f"decoder.stages.{match.group(1)}.", match.group(2)
        if rest in ("self_attn.in_proj_weight", "self_attn.in_proj_bias"):
            kind = rest.rsplit("_", 1)[1]
            for name, part in zip(("q_content_proj", "k_content_proj", "v_proj"), value.chunk(3), strict=True):
                converted[f"{prefix}self_attn.{name}.{kind}"] = part
        elif rest.startswith("block_time_mlp."):
            converted[prefix + "condition_mlp." + rest[len("block_time_mlp.") :]] = value
        else:
            converted[prefix + rename_stage_key(rest, key)] = value
    return converted
