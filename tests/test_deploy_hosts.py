"""python -m recursivedet.deploy on every host: each project's ``Host.export`` builds its graph, and the written
file (TorchScript, ExportedProgram, ONNX) gives the PyTorch model's detections at the image size it was captured at
and at another; DiffusionDet's graph samples (several DDIM steps, box renewal, NMS) as the eager sampler does."""

import copy

import pytest
import torch
from detectron2.config import instantiate
from model_factory import TinyBackbone, one_thread, set_keys

from recursivedet.deploy.check import compare, reference
from recursivedet.deploy.formats import FORMATS, load, write
from recursivedet.hosts import host_of_model, hosts
from recursivedet.model_zoo import get_config

# Each host's RecursiveDet shapes demo (its switches: sharing, passes, PEs), on a tiny backbone and 2 stages.
DEMOS = {
    "SparseRCNN": "SparseRCNN/recursivedet_shapes_demo.py",
    "DiffusionDet": "DiffusionDet/recursivedet_diffusiondet_shapes_demo.py",
    "AdaMixer": "AdaMixer/recursivedet_adamixer_shapes_demo.py",
}


def demo_model(host: str, dim: int = 32, **overrides):
    """The host's shapes demo model at a CPU-test size, randomly initialised (box deltas that move the boxes)."""
    cfg = get_config(DEMOS[host])
    model_cfg = cfg.model
    model_cfg.backbone = TinyBackbone(dim)
    stage = model_cfg.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim = dim, 4, 64
    if host == "AdaMixer":
        stage.in_points, stage.out_points = 8, 16
    else:
        stage.dynamic_dim = 8
    if host == "DiffusionDet":
        model_cfg.time_embedding.dim, model_cfg.time_embedding.out_dim = dim, 4 * dim
    model_cfg.num_proposals = 8
    model_cfg.decoder.num_stages = 2
    set_keys(model_cfg, overrides)
    torch.manual_seed(0)
    model = instantiate(model_cfg).eval()
    for s in model.decoder.stages:
        torch.nn.init.normal_(s.box_delta.weight, std=0.02)
    return model


def _image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed)).float()


def _export_and_compare(model, fmt: str, folder, image=None):
    image = _image(64, 96) if image is None else image
    graph = host_of_model(model).export(copy.deepcopy(model))
    with one_thread():
        path = write(graph, image, fmt, folder / FORMATS[fmt])
        return compare(model, load(path), [image])  # 64x96 and the distorted 48x125


def test_every_host_declares_the_graph_of_its_models():
    assert sorted(hosts()) == sorted(DEMOS)
    for name, host in hosts().items():
        assert callable(host.export), name
        model = demo_model(name)
        graph = host_of_model(model).export(copy.deepcopy(model))
        image = _image(70, 45)
        with torch.no_grad():
            got = graph(image)
        expected = reference(model, image)
        assert len(got[0]) == len(expected[0]) > 0, name
        torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-3)
        torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-5)
        assert torch.equal(got[2], expected[2]), name


@pytest.mark.parametrize("host", sorted(DEMOS))
def test_torchscript_of_every_host_matches_pytorch_at_two_sizes(host, tmp_path):
    difference = _export_and_compare(demo_model(host), "torchscript", tmp_path)
    assert difference.sizes == [(64, 96), (48, 125)]
    assert difference.class_mismatches == 0 and difference.detections > 0
    assert difference.box < 1e-2 and difference.score < 1e-4, difference.describe()


@pytest.mark.slow  # torch.export, then its save and load: 10-20 s a host; the TorchScript test covers the graph
@pytest.mark.parametrize("host", ["AdaMixer", "DiffusionDet"])  # Sparse R-CNN's: test_deploy.py
def test_exported_program_of_the_other_hosts_with_rego_matches_pytorch_at_two_sizes(host, tmp_path):
    model = demo_model(host, **{"rego.num_stages": 1})
    assert model.rego_at_inference()
    difference = _export_and_compare(model, "pt2", tmp_path)
    assert difference.sizes == [(64, 96), (48, 125)] and difference.class_mismatches == 0
    assert difference.box < 1e-2 and difference.score < 1e-4, difference.describe()


@pytest.mark.slow  # torch.export and the ONNX conversion: 20-40 s a host
@pytest.mark.parametrize("host", ["AdaMixer", "DiffusionDet"])
def test_onnx_of_the_other_hosts_matches_pytorch_at_two_sizes(host, tmp_path):
    difference = _export_and_compare(demo_model(host), "onnx", tmp_path)
    assert difference.sizes == [(64, 96), (48, 125)] and difference.class_mismatches == 0
    assert difference.box < 1e-2 and difference.score < 1e-4, difference.describe()


def test_diffusiondet_graph_samples_as_the_eager_sampler_over_several_steps():
    """Three DDIM steps with box renewal, the steps' ensemble and NMS, in float64 (a randomly initialised model
    amplifies float32 rounding over the steps): the graph's detections are the eager model's."""
    model = demo_model("DiffusionDet", **{"sampler.steps": 3, "sampler.renewal_threshold": 0.3}).double()
    graph = host_of_model(model).export(copy.deepcopy(model))
    assert graph.noise.shape == (1 + 2 * 2, 8, 4)
    image = _image(70, 45).double()
    with torch.no_grad():
        got = graph(image)
    expected = reference(model, image)
    assert len(expected[0]) > 8  # more than one step's detections survive the NMS
    torch.testing.assert_close(got[0].float(), expected[0], rtol=0, atol=1e-4)  # detectron2 keeps boxes in float32
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-9)
    assert torch.equal(got[2], expected[2])


def test_diffusiondet_torchscript_over_two_steps_matches_pytorch(tmp_path):
    model = demo_model("DiffusionDet", **{"sampler.steps": 2})
    difference = _export_and_compare(model, "torchscript", tmp_path)
    assert difference.class_mismatches == 0 and difference.detections > 2 * 8
    assert difference.box < 0.1 and difference.score < 1e-3, difference.describe()


def test_a_host_that_cannot_export_says_why_in_one_line(monkeypatch):
    from recursivedet.deploy import command
    from recursivedet.deploy.formats import DeployFormatError
    from recursivedet.hosts import Host

    monkeypatch.setattr(command, "host_of_model", lambda model: Host(name="Other", export="its decoder is a loop"))
    with pytest.raises(
        DeployFormatError, match=r"^x.py builds a object, which cannot be exported: its decoder is a loop$"
    ):
        command.exporter_of(object(), "x.py")
    monkeypatch.setattr(command, "host_of_model", lambda model: Host(name="Other"))
    with pytest.raises(DeployFormatError, match="the Other project declares no export"):
        command.exporter_of(object(), "x.py")
    monkeypatch.setattr(command, "host_of_model", lambda model: None)
    with pytest.raises(DeployFormatError, match="no declared host builds it"):
        command.exporter_of(object(), "x.py")
