"""Frozen batch norm folded into the convolutions computes the same backbone: values, weight gradients,
state dict."""

import copy

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone
from fvcore.nn import FlopCountAnalysis

from recursivedet.modeling.backbone.folded_norm import FrozenNormFoldedConv2d, fold_frozen_batchnorm


def _resnet18():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # every conv trainable: gradients are compared
    torch.manual_seed(0)
    model = build_resnet_backbone(cfg, ShapeSpec(channels=3)).double()
    with torch.no_grad():  # statistics and affine parameters of a trained network, not the identity
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_()
    return model


@pytest.mark.slow
def test_folded_backbone_equals_the_plain_one():
    plain = _resnet18()
    folded = copy.deepcopy(plain)
    assert fold_frozen_batchnorm(folded) == 20  # stem + 8 blocks x 2 + 3 shortcuts
    assert any(isinstance(m, FrozenNormFoldedConv2d) for m in folded.modules())
    assert folded.state_dict().keys() == plain.state_dict().keys()

    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    outputs = [model(x) for model in (folded, plain)]
    for name in outputs[1]:
        torch.testing.assert_close(outputs[0][name], outputs[1][name], rtol=1e-10, atol=1e-10)
    for out in outputs:
        sum((o**2).sum() for o in out.values()).backward()
    for (name, a), b in zip(folded.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9, msg=name)


def test_flop_counts_see_the_plain_convolution_and_norm():
    plain = _resnet18().eval()
    folded = copy.deepcopy(plain)
    fold_frozen_batchnorm(folded)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    counts = [FlopCountAnalysis(m, x).unsupported_ops_warnings(False).total() for m in (folded, plain)]
    assert counts[0] == counts[1] > 0
