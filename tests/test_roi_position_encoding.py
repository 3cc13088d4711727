"""The closed-form RoIAlign of the image PE equals pooling the positional maps with RoIAlign."""

import pytest
import torch
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import Boxes

from recursivedet.modeling.position_encoding import ImageSinePE
from recursivedet.modeling.roi_align import fixed_grid_roi_align
from recursivedet.modeling.roi_position_encoding import AnalyticRoIPositionEncoding


def _boxes(seed, b, n, h, w):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(b, n, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 0.1 * torch.tensor([w, h])
    size = torch.exp(torch.rand(b, n, 2, generator=g) * 6) * 2  # 2 px to ~800 px: every level, edges
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=-1)
    boxes[0, 0] = torch.tensor([0.0, 0.0, w, h])  # the initial whole-image proposal
    boxes[0, 1] = torch.tensor([w - 3.0, h - 3.0, w + 40.0, h + 40.0])  # past the bottom-right corner
    return boxes


@pytest.mark.parametrize("pooler_type", ["ROIAlignV2", "ROIAlign"])
@pytest.mark.parametrize("sampling_ratio", [2, 1, 3])
def test_analytic_equals_roialign_of_pe_maps(pooler_type, sampling_ratio):
    pooler = ROIPooler(7, (1 / 4, 1 / 8, 1 / 16, 1 / 32), sampling_ratio, pooler_type)
    b, n, h, w, feats = 2, 40, 224, 320, 8
    maps = [torch.zeros(b, 1, h // s, w // s) for s in (4, 8, 16, 32)]
    # Image 1 is normalised over a smaller extent than the map, as a small image in a padded batch.
    extents = [torch.tensor([[h / s, w / s], [96 / s, 160 / s]]) for s in (4, 8, 16, 32)]
    pe = ImageSinePE(feats)
    pe_maps = [pe(m, e) for m, e in zip(maps, extents, strict=True)]
    boxes = _boxes(0, b, n, h, w)
    expected = pooler(pe_maps, [Boxes(x) for x in boxes]).flatten(2).transpose(1, 2)
    analytic = AnalyticRoIPositionEncoding(pooler, feats)(boxes, [m.shape[-2:] for m in maps], extents)
    torch.testing.assert_close(analytic.dense(), expected, rtol=1e-4, atol=2e-5)


def test_separable_projection_equals_dense_projection():
    pooler = ROIPooler(7, (1 / 4, 1 / 8), 2, "ROIAlignV2")
    maps = [(64, 64), (32, 32)]
    extents = [torch.tensor([[64.0, 64.0]]), torch.tensor([[32.0, 32.0]])]
    pe = AnalyticRoIPositionEncoding(pooler, 6)(_boxes(1, 1, 10, 256, 256), maps, extents)
    weight = torch.randn(5, 12)
    torch.testing.assert_close(pe.project(weight), pe.dense() @ weight.T, rtol=1e-5, atol=1e-5)


def test_only_fixed_grid_roialign_is_supported():
    assert fixed_grid_roi_align(ROIPooler(7, (1 / 4,), 2, "ROIAlignV2"))
    assert not fixed_grid_roi_align(ROIPooler(7, (1 / 4,), 0, "ROIAlignV2"))
    with pytest.raises(ValueError, match="fixed sampling"):
        AnalyticRoIPositionEncoding(ROIPooler(7, (1 / 4,), 0, "ROIAlignV2"), 4)


def test_float64_boxes_stay_float64():
    pooler = ROIPooler(7, (1 / 4, 1 / 8), 2, "ROIAlignV2")
    extents = [torch.tensor([[64.0, 64.0]]), torch.tensor([[32.0, 32.0]])]
    pe = AnalyticRoIPositionEncoding(pooler, 6)(_boxes(1, 1, 10, 256, 256).double(), [(64, 64), (32, 32)], extents)
    assert pe.y_sum.dtype == torch.float64
    assert pe.project(torch.randn(5, 12, dtype=torch.float64)).dtype == torch.float64
