"""RoIAlign by row gathers equals detectron2's ROIPooler (torchvision's roi_align): values and gradients,
over levels, images, both alignments, sampling grids, boxes partly or wholly outside the map."""

import pytest
import torch
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes

from recursivedet.modeling.roi_align import fixed_grid_roi_align, gather_roi_align, pool_roi_features

SCALES = (1 / 4, 1 / 8, 1 / 16, 1 / 32)


def _case(dtype, seed=0, num_images=2, num_boxes=40, channels=8):
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(num_images, channels, 256 // s, 320 // s, generator=g, dtype=dtype) for s in (4, 8, 16, 32)]
    xy = torch.rand(num_images, num_boxes, 2, generator=g, dtype=dtype) * torch.tensor([340.0, 280.0]) - 20
    wh = torch.rand(num_images, num_boxes, 2, generator=g, dtype=dtype) ** 2 * 600 + 0.5  # every level
    boxes = torch.cat([xy, xy + wh], dim=-1)
    boxes[0, 0] = torch.tensor([-50.0, -50, -10, -10])  # wholly outside: zeros
    boxes[1, 1] = torch.tensor([300.0, 250, 400, 400])  # across the far edges
    boxes[1, 2] = torch.tensor([10.0, 10, 10.5, 10.25])  # smaller than a cell
    return maps, boxes


def _reference(pooler, maps, boxes):
    return pooler(maps, [Boxes(b) for b in boxes]).flatten(2).transpose(1, 2)


@pytest.mark.parametrize(("pooler_type", "sampling_ratio"), [("ROIAlignV2", 2), ("ROIAlign", 2), ("ROIAlignV2", 3)])
def test_values_and_map_gradients_equal_roipooler(pooler_type, sampling_ratio):
    pooler = ROIPooler(7, SCALES, sampling_ratio, pooler_type)
    maps, boxes = _case(torch.float64)
    assert {int(x) for x in torch.unique(_levels(pooler, boxes))} == {0, 1, 2, 3}
    grad = torch.randn(boxes.shape[0] * boxes.shape[1], 49, maps[0].shape[1], dtype=torch.float64)

    ours_maps = [m.contiguous(memory_format=torch.channels_last).requires_grad_() for m in maps]
    ours = gather_roi_align(pooler, ours_maps, boxes)
    ours.backward(grad)
    ref_maps = [m.clone().requires_grad_() for m in maps]
    reference = _reference(pooler, ref_maps, boxes)
    reference.backward(grad)

    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    assert reference[0].abs().max() == 0  # the box outside the image
    for a, b in zip(ours_maps, ref_maps, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)


def _levels(pooler, boxes):
    return assign_boxes_to_levels(
        [Boxes(b) for b in boxes], pooler.min_level, pooler.max_level, pooler.canonical_box_size, 4
    )


def test_float32_and_standard_layout_maps():
    pooler = ROIPooler(7, SCALES, 2, "ROIAlignV2")
    maps, boxes = _case(torch.float32, seed=1)
    reference = _reference(pooler, maps, boxes)
    torch.testing.assert_close(gather_roi_align(pooler, maps, boxes), reference, rtol=1e-5, atol=1e-5)


def test_every_level_takes_part_in_the_graph_even_without_boxes():
    pooler = ROIPooler(7, SCALES, 2, "ROIAlignV2")
    maps, _ = _case(torch.float32)
    maps = [m.requires_grad_() for m in maps]
    small = torch.tensor([[[10.0, 10, 40, 40], [50, 60, 80, 90]]])  # all on the first level
    gather_roi_align(pooler, [m[:1] for m in maps], small).sum().backward()
    assert maps[0].grad.abs().sum() > 0
    assert all(m.grad is not None and m.grad.abs().sum() == 0 for m in maps[1:])


def test_single_level_pooler_and_fallback():
    pooler = ROIPooler(5, (1 / 8,), 2, "ROIAlignV2")
    maps, boxes = _case(torch.float64)
    torch.testing.assert_close(
        gather_roi_align(pooler, maps[1:2], boxes), _reference(pooler, maps[1:2], boxes), rtol=1e-12, atol=1e-12
    )
    adaptive = ROIPooler(7, SCALES, 0, "ROIAlignV2")  # sampling grid chosen per box: not gathered
    assert not fixed_grid_roi_align(adaptive)
    torch.testing.assert_close(pool_roi_features(adaptive, maps, boxes), _reference(adaptive, maps, boxes))


def test_no_boxes():
    pooler = ROIPooler(7, SCALES, 2, "ROIAlignV2")
    maps, _ = _case(torch.float32)
    out = gather_roi_align(pooler, maps, torch.zeros(2, 0, 4))
    assert out.shape == (0, 49, maps[0].shape[1])
