"""timm backbones (any timm model with feature maps; Swin as the official detection backbone): feature maps
against timm's feature_info, forward/backward at a small size, freezing, weights from a local file (timm's and
Microsoft's Swin format), the errors for missing or unusable weights, and the Swin rows' parameter counts."""

import re

import pytest
import torch
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool

from recursivedet.analysis.model_cost import model_cost
from recursivedet.modeling.backbone.swin import SWIN_VARIANTS, PaddedShiftSwinBlock, SwinBackbone
from recursivedet.modeling.backbone.timm_backbone import TimmBackbone, TimmModelError, TimmWeightsError
from recursivedet.projects.SparseRCNN.host import SWIN_ROWS

timm = pytest.importorskip("timm")

torch.set_num_threads(1)


def forward_backward(backbone, h: int, w: int) -> dict:
    x = torch.randn(2, 3, h, w)
    out = backbone(x)
    sum(v.square().mean() for v in out.values()).backward()
    return out


@pytest.mark.parametrize(
    "name,indices", [("resnet18", (1, 2, 3, 4)), ("convnext_atto", (0, 1, 2, 3)), ("efficientnet_b0", (2, 3, 4))]
)
def test_maps_have_timms_channels_and_strides_and_train(name, indices):
    torch.manual_seed(0)
    backbone = TimmBackbone(name, indices)
    info = timm.create_model(name, features_only=True, out_indices=indices).feature_info
    shapes = backbone.output_shape()
    assert [s.channels for s in shapes.values()] == info.channels()
    assert [s.stride for s in shapes.values()] == info.reduction()
    assert list(shapes) == [f"res{s.bit_length() - 1}" for s in info.reduction()]
    out = forward_backward(backbone, 64, 96)
    for f, spec in shapes.items():
        assert out[f].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride), f
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


def test_under_detectron2s_fpn_with_frozen_stages_and_batch_norm_statistics_kept():
    torch.manual_seed(0)
    bottom_up = TimmBackbone("resnet18", (1, 2, 3, 4), frozen_prefixes=("conv1", "bn1", "layer1"))
    fpn = FPN(
        bottom_up=bottom_up, in_features=list(bottom_up.output_shape()), out_channels=16, top_block=LastLevelMaxPool()
    )
    fpn.train()
    stats = bottom_up.model.layer2[0].bn1.running_mean.clone()
    out = fpn(torch.randn(2, 3, 64, 64))
    assert {k: v.shape[-1] for k, v in out.items()} == {"p2": 16, "p3": 8, "p4": 4, "p5": 2, "p6": 1}
    sum(v.sum() for v in out.values()).backward()
    frozen = [n for n, p in bottom_up.model.named_parameters() if not p.requires_grad]
    assert frozen and all(re.match(r"(conv1|bn1|layer1)\.", n) for n in frozen)
    assert bottom_up.model.layer2[0].conv1.weight.grad is not None
    assert torch.equal(bottom_up.model.layer2[0].bn1.running_mean, stats)  # norm_eval: ImageNet statistics kept


def test_bad_names_and_indices_are_one_line_errors():
    with pytest.raises(TimmModelError, match="timm has no model 'resnet_nope'"):
        TimmBackbone("resnet_nope")
    with pytest.raises(TimmModelError, match=r"out_indices of resnet18 must be in 0..4"):
        TimmBackbone("resnet18", (1, 5))
    with pytest.raises(TimmModelError, match="match no parameter"):
        TimmBackbone("resnet18", frozen_prefixes=("stem",))


def microsoft_format(timm_state: dict) -> dict:
    """A timm Swin state dict in the layout of Microsoft's release files (downsample at the end of a stage)."""
    out = {}
    for k, v in timm_state.items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        out[k.replace("head.fc.", "head.")] = v
    return {"model": out}


@pytest.mark.parametrize("layout", ["timm", "microsoft"])
def test_swin_weights_load_from_a_local_file_in_timms_or_microsofts_layout(layout, tmp_path):
    torch.manual_seed(1)
    classifier = timm.create_model("swin_tiny_patch4_window7_224")
    state = classifier.state_dict()
    path = tmp_path / "swin_tiny_patch4_window7_224.pth"
    torch.save(microsoft_format(state) if layout == "microsoft" else state, path)
    backbone = SwinBackbone("T", pretrained=str(path))
    loaded = backbone.model.state_dict()
    for k, v in loaded.items():
        if not k.endswith("relative_position_index"):
            assert torch.equal(v, state[k]), k


def test_missing_or_unusable_weights_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(TimmWeightsError, match="swin_nowhere.pth of timm model swin_tiny_patch4_window7_224 does not"):
        SwinBackbone("T", pretrained=str(tmp_path / "swin_nowhere.pth"))
    other = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), other)
    with pytest.raises(TimmWeightsError, match="does not hold the weights of timm model swin_tiny.*weights missing"):
        SwinBackbone("T", pretrained=str(other))

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("network unreachable")
        return create(name, **kwargs)

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(TimmWeightsError) as error:
        TimmBackbone("resnet18", pretrained=True)
    message = str(error.value)
    assert "could not be had (OSError: network unreachable)" in message
    assert "pretrained=/path/to/file" in message and ("model.safetensors" in message or ".pth" in message)


def reference_attention(block, x):
    """The official Swin detection block's attention (pad to window multiples, then shift), written out."""
    from timm.models.swin_transformer import window_partition, window_reverse

    _, h, w, c = x.shape
    ws, shift = block.window_size[0], block.shift_size[0]
    x = torch.nn.functional.pad(x, (0, 0, 0, (-w) % ws, 0, (-h) % ws))
    hp, wp = x.shape[1:3]
    mask = None
    if shift:
        x = torch.roll(x, (-shift, -shift), (1, 2))
        region = torch.zeros(1, hp, wp, 1)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                region[:, hs, wsl] = cnt
                cnt += 1
        m = window_partition(region, (ws, ws)).view(-1, ws * ws)
        mask = (m.unsqueeze(1) - m.unsqueeze(2)).ne(0).float() * -100.0
    windows = block.attn(window_partition(x, (ws, ws)).view(-1, ws * ws, c), mask=mask)
    x = window_reverse(windows.view(-1, ws, ws, c), (ws, ws), hp, wp)
    if shift:
        x = torch.roll(x, (shift, shift), (1, 2))
    return x[:, :h, :w]


def test_swin_blocks_pad_then_shift_as_the_official_detection_backbone():
    torch.manual_seed(0)
    backbone = SwinBackbone("T").eval()
    blocks = [m for m in backbone.model.modules() if isinstance(m, PaddedShiftSwinBlock)]
    assert len(blocks) == 12 and all(b.window_size == (7, 7) for b in blocks)
    assert [b.shift_size for b in blocks[-2:]] == [(0, 0), (3, 3)]  # also on maps smaller than a window
    block = blocks[1]
    with torch.no_grad():
        for h, w in [(14, 21), (9, 12), (3, 5)]:
            x = torch.randn(2, h, w, block.dim)
            assert torch.allclose(block._attn(x), reference_attention(block, x), atol=1e-5), (h, w)
        x = torch.randn(2, 14, 21, block.dim)  # at window multiples timm's order gives the same
        timm_order = timm.models.swin_transformer.SwinTransformerBlock._attn(block, x)
        assert torch.allclose(block._attn(x), timm_order, atol=1e-6)


def test_swin_t_trains_at_a_small_odd_size_with_an_output_norm_per_map():
    torch.manual_seed(0)
    backbone = SwinBackbone("T")
    assert sum(p.numel() for p in backbone.parameters()) == 27_520_698  # the official code's Swin-T
    assert {f: (s.channels, s.stride) for f, s in backbone.output_shape().items()} == {
        "res2": (96, 4),
        "res3": (192, 8),
        "res4": (384, 16),
        "res5": (768, 32),
    }
    out = forward_backward(backbone, 64, 96)
    assert out["res5"].shape == (2, 768, 2, 3)
    assert backbone.out_norms["res2"].weight.grad is not None
    assert isinstance(backbone.model.layers[0].blocks[0].drop_path1, torch.nn.Identity)  # rate 0 at the first
    assert backbone.model.layers[3].blocks[1].drop_path1.drop_prob == pytest.approx(SWIN_VARIANTS["T"][1])


@pytest.mark.slow
@pytest.mark.parametrize("size,params", [("S", 48_838_602), ("B", 86_745_016)])
def test_swin_s_and_b_train_at_a_small_size(size, params):
    # the parameters of the official code's Swin-S and Swin-B detection backbones (depths 2, 2, 18, 2)
    torch.manual_seed(0)
    backbone = SwinBackbone(size)
    assert sum(p.numel() for p in backbone.parameters()) == params
    out = forward_backward(backbone, 64, 64)
    assert [v.shape[1] for v in out.values()] == [s.channels for s in backbone.output_shape().values()]


@pytest.mark.slow
@pytest.mark.parametrize("row", SWIN_ROWS, ids=lambda r: r.label)
def test_swin_rows_have_the_papers_parameter_counts(row):
    params_m = model_cost(row.config, with_flops=False)["params"] / 1e6
    assert abs(params_m - row.params_m) / row.params_m < 0.02, (row.label, params_m, row.params_m)
