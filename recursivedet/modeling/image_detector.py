"""What the detectors of every host share before their decoder: input normalisation and padding, the backbone
(in channels-last memory format, frozen batch norms folded), its maps in the pooler's level order and each
image's positional-encoding extents."""

import torch
from detectron2.modeling import Backbone
from detectron2.structures import ImageList
from torch import nn

from recursivedet.errors import ConfigValueError

from .backbone.folded_norm import fold_frozen_batchnorm as fold_frozen_bn
from .box_utils import image_whwh


class ImageDetector(nn.Module):
    """Base of the hosts' detectors (:class:`~recursivedet.modeling.RecursiveDet`, DiffusionDet): registers the
    backbone first, so that parameter order (and with it the optimizer's) is backbone, then the subclass's.

    Args:
        backbone: a detectron2 backbone giving ``in_features`` with ``dim`` channels each.
        dim: the decoder's width.
        in_features: backbone outputs pooled by the decoder, in the pooler's level order.
        pixel_mean, pixel_std: per-channel normalisation in the input format's channel order.
        input_format: "RGB" (the official recipes, torchvision ImageNet statistics) or "BGR".
        channels_last: run the backbone in channels-last memory format (its convolutions are then faster on
            CPUs and on GPUs with tensor cores); same results up to float rounding.
        fold_frozen_batchnorm: apply the backbone's frozen batch norms as part of the convolutions before them
            (:mod:`~recursivedet.modeling.backbone.folded_norm`; same parameters, same results up to rounding).
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        dim: int,
        in_features,
        pixel_mean,
        pixel_std,
        input_format: str,
        channels_last: bool,
        fold_frozen_batchnorm: bool,
    ):
        super().__init__()
        if len(pixel_mean) != len(pixel_std) or any(s <= 0 for s in pixel_std):
            raise ConfigValueError(
                f"model.pixel_mean {list(pixel_mean)} and model.pixel_std {list(pixel_std)} need one value per "
                "channel, pixel_std positive ones"
            )
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ConfigValueError(f"model.in_features {missing} are not backbone outputs; it gives {sorted(shapes)}")
        widths = {f: shapes[f].channels for f in in_features}
        if any(c != dim for c in widths.values()):
            raise ConfigValueError(
                f"backbone channels {widths} must equal the decoder width {dim} (model.decoder.stage.dim)"
            )
        self.backbone = backbone
        self.in_features = list(in_features)
        self.strides = [shapes[f].stride for f in self.in_features]
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if fold_frozen_batchnorm:
            fold_frozen_bn(self.backbone)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs) -> ImageList:
        """Normalised images, padded to the backbone's size divisibility."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(
            images, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )

    def position_extents(self, image_sizes) -> list[torch.Tensor]:
        """Per level, (B, 2) height and width in cells over which each image's PE is normalised: the
        image's own padded size, so that batching does not change an image's encoding (one image alone is
        the official code's setting, where the PE spans the whole padded map)."""
        sizes = torch.as_tensor([list(s) for s in image_sizes], dtype=torch.float32, device=self.device)
        divisor = self.backbone.size_divisibility
        if divisor > 1:
            sizes = torch.ceil(sizes / divisor) * divisor
        return [torch.ceil(sizes / s) for s in self.strides]

    def run_backbone(self, images: ImageList) -> dict[str, torch.Tensor]:
        """The backbone's output maps, in the memory format of ``channels_last``."""
        if self.channels_last:
            return self.backbone(images.tensor.contiguous(memory_format=torch.channels_last))
        return self.backbone(images.tensor)

    def pooled_features(self, images: ImageList, feature_maps: dict[str, torch.Tensor]):
        """What the decoder pools from: the ``in_features`` maps in pooler order (in the decoder's
        ``feature_memory_format``), the image sizes whwh (B, 4) and the PE extents (None when no stage uses
        the image PE)."""
        layout = self.decoder.feature_memory_format
        features = [feature_maps[f].contiguous(memory_format=layout) for f in self.in_features]
        extents = self.position_extents(images.image_sizes) if self.decoder.uses_image_pe else None
        return features, image_whwh(images.image_sizes, self.device), extents
