"""Inference switches for speed (``train.inference`` in the config): bfloat16 autocast and ``torch.compile``.

- ``bf16``: the model runs under ``torch.autocast(device, dtype=torch.bfloat16)``: matrix products and
  convolutions in bfloat16 (the linear layers then take ``F.linear``, see :mod:`recursivedet.modeling.linear`),
  boxes and the RoIAlign sampling points in float32. On the CPU it needs bfloat16 instructions (AVX-512 BF16 or
  AMX); a processor without them stops with one line (emulated bfloat16 would be slower than float32).
- ``compile``: the backbone and the decoder go through ``torch.compile`` (``dynamic=True``: one compilation for
  every image size). The first images are slow while it compiles.

:func:`inference_model` applies them and the test-time augmentation of :mod:`recursivedet.inference.tta`,
for ``train_net.py --eval-only`` and the export.
"""

import torch
from omegaconf import OmegaConf
from torch import nn

from recursivedet.errors import ConfigValueError, UserError

from .tta import with_tta


class BFloat16UnsupportedError(UserError, RuntimeError):
    """bfloat16 inference was asked for on a processor without bfloat16 instructions."""


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX-512 BF16 or AMX) for oneDNN."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) and (
            torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def check_bf16(device: torch.device) -> None:
    """:class:`BFloat16UnsupportedError` when ``device`` cannot run bfloat16 natively."""
    if device.type == "cpu" and not cpu_supports_bf16():
        raise BFloat16UnsupportedError(
            "train.inference.bf16=True needs a processor with bfloat16 instructions (AVX-512 BF16 or AMX); this one "
            "has none (it would only emulate them, slower than float32): leave it off"
        )
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BFloat16UnsupportedError("train.inference.bf16=True: this GPU does not support bfloat16; leave it off")


class Autocast(nn.Module):
    """Runs ``model`` under ``torch.autocast(device, dtype)``; detections come back in float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.model = model
        self.dtype = dtype

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    def forward(self, batched_inputs):
        with torch.autocast(self.model.device.type, dtype=self.dtype):
            outputs = self.model(batched_inputs)
        if isinstance(outputs, list):
            for out in outputs:
                inst = out.get("instances")
                if inst is not None:
                    inst.pred_boxes.tensor = inst.pred_boxes.tensor.float()
                    inst.scores = inst.scores.float()
        return outputs


def compile_parts(model: nn.Module) -> nn.Module:
    """``torch.compile`` the backbone and the decoder of ``model`` in place (see the module)."""
    model.backbone = torch.compile(model.backbone, dynamic=True)
    model.decoder.forward = torch.compile(model.decoder.forward, dynamic=True)
    return model


def with_speed(model: nn.Module, *, bf16: bool = False, compile: bool = False) -> nn.Module:
    """``model`` with the switches applied (the same module when both are off)."""
    if compile:
        model = compile_parts(model)
    if bf16:
        check_bf16(model.device)
        model = Autocast(model)
    return model


def inference_model(cfg, model: nn.Module) -> nn.Module:
    """``model`` (weights loaded, eval mode) as the config's ``train.inference`` switches and
    ``dataloader.tta`` ask."""
    settings = OmegaConf.select(cfg, "train.inference", default=None) or {}
    unknown = sorted(set(settings) - {"bf16", "compile"})
    if unknown:
        raise ConfigValueError(f"train.inference has unknown settings {unknown} (bf16, compile)")
    model = with_speed(model.eval(), bf16=bool(settings.get("bf16")), compile=bool(settings.get("compile")))
    return with_tta(cfg, model)
