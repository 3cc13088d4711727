"""Any ``timm`` image model that exposes feature maps (Swin, ConvNeXt, ResNet, EfficientNet, RegNet, ...) as a
detectron2 backbone, for detectron2's ``FPN``.

LazyConfig (see ``SparseRCNN/recursivedet_swin_T_300pro_3x.py`` for the Swin models of paper Table 2)::

    from detectron2.config import LazyCall as L
    from detectron2.modeling.backbone import FPN
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool
    from recursivedet.modeling.backbone import TimmBackbone

    model.backbone = L(FPN)(
        bottom_up=L(TimmBackbone)(name="convnext_tiny", out_indices=(0, 1, 2, 3), drop_path_rate=0.4),
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=256,
        top_block=L(LastLevelMaxPool)(),
    )

The model is timm's, built with ``timm.create_model`` and cut after the last feature map wanted (classifier and
final norm removed); its parameter names are timm's, under ``model.``. Feature maps come from timm's
``forward_intermediates``, and each is named ``res<k>`` after its stride 2^k (as detectron2's ResNet names them,
so ResNet-FPN configs work unchanged); channels and strides are those of timm's ``feature_info``.

Weights: ``pretrained=False`` keeps timm's initialisation; a path loads that file (a timm checkpoint, or the
model's original release, e.g. Microsoft's ``swin_tiny_patch4_window7_224.pth``: timm's own conversion of the
model applies), checking that every backbone weight is in it; ``pretrained=True`` asks timm for its default
weights, which may need a download: when that is impossible the error names the file to fetch and pass as a
path. The input is the model's ImageNet normalisation (``pixel_mean``/``pixel_std`` of this class, 0-255 RGB
units), to be set as the detector's ``pixel_mean``/``pixel_std``: for Swin and ConvNeXt those are the detectors'
defaults here.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from torch import nn

from recursivedet.errors import UserError

__all__ = ["TimmBackbone", "TimmWeightsError", "backbone_checkpoint", "load_timm_weights", "timm_state_dict"]


class TimmWeightsError(UserError, RuntimeError):
    """Pretrained weights of a timm backbone that cannot be had or do not fit."""


class TimmModelError(UserError, ValueError):
    """A timm model name or setting that cannot give the requested feature maps."""


def _timm():
    try:
        import timm
    except ImportError:
        raise TimmModelError(
            "timm backbones need the timm package: python -m pip install timm (scripts/setup.sh installs it)"
        ) from None
    return timm


def _filter_fn(model: nn.Module) -> Callable | None:
    """timm's conversion of a model's original checkpoints to its own names (the module's checkpoint_filter_fn)."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def _read_weights(path: str, name: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise TimmWeightsError(f"pretrained weights file {path} of timm model {name} does not exist")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        # weights_only: tensors and plain containers; nothing stored in the file is executed
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TimmWeightsError(f"cannot read weights file {path} ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(state, dict):
        raise TimmWeightsError(f"weights file {path} holds no dict of weights but a {type(state).__name__}")
    return state


def timm_state_dict(model: nn.Module, state: dict, source: str = "", name: str = "") -> tuple[dict, list[str]]:
    """A classification checkpoint's weights (``state``: timm's names, or the model family's original release,
    converted by timm's ``checkpoint_filter_fn``) as a state dict of the (possibly cut) timm ``model``.

    Returns:
        (the weights of ``model``, the file's keys left out: classifier, final norm, layers after the cut).

    Raises:
        TimmWeightsError: a weight of ``model`` is missing from ``state`` or has another shape.
    """
    for key in ("model", "state_dict"):  # original releases wrap the weights
        if isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    filter_fn = _filter_fn(model)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in kept and not k.endswith(("relative_position_index", "num_batches_tracked"))]
    wrong = [f"{k} {tuple(v.shape)}->{tuple(own[k].shape)}" for k, v in kept.items() if v.shape != own[k].shape]
    if missing or wrong:
        problems = [f"{len(missing)} weights missing ({', '.join(missing[:3])})"] if missing else []
        problems += [f"{len(wrong)} of another shape ({', '.join(wrong[:3])})"] if wrong else []
        raise TimmWeightsError(
            f"{source} does not hold the weights of timm model {name}: " + "; ".join(problems) + " (another model's?)"
        )
    return kept, sorted(set(state) - set(kept))


def load_timm_weights(model: nn.Module, path: str | os.PathLike, name: str = "") -> list[str]:
    """Load the checkpoint file ``path`` into the timm ``model`` (see :func:`timm_state_dict`); returns the
    file's keys left out. :class:`TimmWeightsError` when the file is missing, unreadable or does not fit."""
    path = os.fspath(path)
    kept, dropped = timm_state_dict(model, _read_weights(path, name), path, name)
    model.load_state_dict(kept, strict=False)
    return dropped


def backbone_checkpoint(model: nn.Module, state: dict) -> tuple[dict, list[str], str] | None:
    """``state`` (a checkpoint's weights) as weights of ``model``'s timm backbone, when it is a classification
    checkpoint of that backbone: no key of it is a key of ``model``, ``model`` has one :class:`TimmBackbone`,
    and the backbone's weights are all in it. None otherwise.

    Returns:
        (weights under ``model``'s names, the checkpoint's keys left out, the backbone's module name).
    """
    own = model.state_dict()
    if any(k in own for k in state):
        return None
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, TimmBackbone)]
    if len(found) != 1:
        return None
    prefix, backbone = found[0]
    try:
        kept, dropped = timm_state_dict(backbone.model, state, name=backbone.name)
    except TimmWeightsError:
        return None
    return {f"{prefix}.model.{k}": v for k, v in kept.items()}, dropped, prefix


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    """``name`` is one of ``prefixes`` or inside one of them (``layers.1`` is not inside ``layers.10``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _weights_source(cfg: dict) -> tuple[str, str]:
    """(file, where) of a timm pretrained config: the file to fetch and where it is published."""
    if cfg.get("hf_hub_id"):
        return cfg.get("hf_hub_filename") or "model.safetensors", f"the Hugging Face hub repository {cfg['hf_hub_id']}"
    if cfg.get("url"):
        return Path(cfg["url"]).name, cfg["url"]
    return "its weights file", "its authors' release"


class TimmBackbone(Backbone):
    """A timm model's feature maps at the requested ``out_indices`` (indices into its ``feature_info``)."""

    def __init__(
        self,
        name: str,
        out_indices: Sequence[int] = (1, 2, 3, 4),
        *,
        pretrained: bool | str | os.PathLike = False,
        out_norm: bool = False,
        frozen_prefixes: Sequence[str] = (),
        norm_eval: bool = True,
        **model_kwargs,
    ):
        """
        Args:
            name: a timm model name (``timm.list_models()``), e.g. ``swin_tiny_patch4_window7_224``.
            out_indices: which of the model's ``feature_info`` maps to return (e.g. 0-3 for Swin and ConvNeXt,
                whose first map has stride 4; 1-4 for ResNet and EfficientNet, whose first has stride 2).
            pretrained: False, True (timm's default weights; an error naming the file when they cannot be
                had), or the path of a checkpoint file (see the module docstring).
            out_norm: a LayerNorm on each returned map, as the Swin detection backbones of the official
                Sparse R-CNN / RecursiveDet code (``norm0``-``norm3`` of its ``swin_transformer.py``).
            frozen_prefixes: parameter-name prefixes of the timm model to freeze, e.g. ``("patch_embed",
                "layers.0")`` for the official code's ``frozen_stages=2``; frozen modules stay in eval mode.
            norm_eval: keep every batch norm in eval mode (ImageNet statistics), as detection training with a
                few images per device needs (mmdetection's ``norm_eval``); no effect on models without BN.
            model_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
        """
        super().__init__()
        timm = _timm()
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
            raise TimmModelError(f"timm has no model {name!r}" + (f"; e.g. {', '.join(close)}" if close else ""))
        model = timm.create_model(name, pretrained=False, **model_kwargs)
        info = list(model.feature_info)
        out_indices = sorted({int(i) for i in out_indices})
        if not out_indices or not all(0 <= i < len(info) for i in out_indices):
            raise TimmModelError(
                f"out_indices of {name} must be in 0..{len(info) - 1} (its feature_info), got {out_indices}"
            )
        if not hasattr(model, "forward_intermediates"):
            raise TimmModelError(f"timm model {name} has no forward_intermediates: it cannot give feature maps here")
        self.name = name
        self.pretrained_cfg = model.pretrained_cfg
        self._indices = out_indices
        strides = [int(info[i]["reduction"]) for i in out_indices]
        self._out_features = [f"res{int(math.log2(s))}" for s in strides]
        self._out_feature_strides = dict(zip(self._out_features, strides, strict=True))
        self._out_feature_channels = {
            f: int(info[i]["num_chs"]) for f, i in zip(self._out_features, out_indices, strict=True)
        }
        if len(set(self._out_features)) != len(self._out_features):
            raise TimmModelError(f"out_indices {out_indices} of {name} give two maps of the same stride {strides}")
        model.prune_intermediate_layers(out_indices, prune_norm=True, prune_head=True)
        self.model = model
        self.customize()
        if pretrained is True:
            self._load_default_weights()
        elif pretrained:
            load_timm_weights(self.model, pretrained, name)
        self.out_norms = (
            nn.ModuleDict({f: nn.LayerNorm(c) for f, c in self._out_feature_channels.items()}) if out_norm else None
        )
        self.frozen_prefixes = tuple(frozen_prefixes)
        frozen = [n for n, _ in self.model.named_parameters() if _under(n, self.frozen_prefixes)]
        if self.frozen_prefixes and not frozen:
            raise TimmModelError(f"frozen_prefixes {self.frozen_prefixes} match no parameter of timm model {name}")
        for n, p in self.model.named_parameters():
            if _under(n, self.frozen_prefixes):
                p.requires_grad_(False)
        self.norm_eval = norm_eval
        self.train(self.training)

    def customize(self) -> None:
        """Hook for model-specific changes after the cut and before loading weights (see ``swin.py``)."""

    def _load_default_weights(self) -> None:
        timm = _timm()
        cfg = self.pretrained_cfg
        try:
            full = timm.create_model(self.name, pretrained=True, num_classes=0)
        except Exception as e:
            file, where = _weights_source(cfg)
            raise TimmWeightsError(
                f"the pretrained weights of timm model {self.name} could not be had ({type(e).__name__}: "
                f"{str(e)[:200]}); download {file} from {where} where you can, and name it: "
                "pretrained=/path/to/file (in a config: model.backbone.bottom_up.pretrained=/path/to/file)"
            ) from e
        own = self.model.state_dict()
        self.model.load_state_dict({k: v for k, v in full.state_dict().items() if k in own}, strict=True)

    @property
    def pixel_mean(self) -> list[float]:
        """The model's ImageNet mean in 0-255 RGB units (the detector's ``pixel_mean``)."""
        return [255.0 * m for m in self.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))]

    @property
    def pixel_std(self) -> list[float]:
        """The model's ImageNet std in 0-255 RGB units (the detector's ``pixel_std``)."""
        return [255.0 * s for s in self.pretrained_cfg.get("std", (0.229, 0.224, 0.225))]

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides.values())

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }

    def train(self, mode: bool = True) -> TimmBackbone:
        super().train(mode)
        if mode:
            for n, m in self.model.named_modules():
                if _under(n, self.frozen_prefixes) or (
                    self.norm_eval and isinstance(m, nn.modules.batchnorm._BatchNorm)
                ):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(N, 3, H, W)`` normalised images -> ``{res<k>: (N, C, ceil(H / 2^k), ceil(W / 2^k))}``."""
        maps = self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True, stop_early=True)
        out = {}
        for name, feature in zip(self._out_features, maps, strict=True):
            if self.out_norms is not None:
                feature = self.out_norms[name](feature.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            out[name] = feature
        return out
