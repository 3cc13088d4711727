"""REGO in the slot of the host contract, on every host: ``model.rego.num_stages=K`` trains REGO's stages with
their own losses and makes REGO's last stage the output at inference; off at inference, the host's own output.
"""

import pytest
import torch
from model_factory import make_input, one_thread, tiny_adamixer, tiny_diffusiondet, tiny_model

from recursivedet.engine import load_config
from recursivedet.model_zoo import get_config_file

IMAGES = [
    make_input(64, 96, [[8, 10, 40, 50], [40, 16, 90, 60]], [0, 2], seed=1),
    make_input(64, 64, [[5, 5, 40, 50]], [1], seed=2),
]
HOSTS = {
    "sparse_rcnn": lambda **kw: tiny_model("sparse_rcnn", **kw),
    "diffusiondet": lambda **kw: tiny_diffusiondet("recursivedet_diffusiondet", **kw),
    "adamixer": lambda **kw: tiny_adamixer("recursivedet_adamixer", **kw),
}
REGO_STAGES = 2


@pytest.fixture(autouse=True)
def single_thread():
    with one_thread():
        yield


def build(host: str, rego_stages: int = REGO_STAGES, **overrides):
    return HOSTS[host](**{"decoder.num_stages": 2, "rego.num_stages": rego_stages, **overrides})


def randomise(module, seed: int = 1) -> None:
    """Weights at the scale of their fan-in, vectors moved by 0.1: no zero-initialised layer hides a gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(noise / p[0].numel() ** 0.5) if p.dim() > 1 else p.add_(0.1 * noise)


@pytest.mark.parametrize("host", HOSTS)
def test_rego_trains_on_every_host(host):
    model = build(host, **{"rego.aux_losses": True}).train()
    randomise(model.rego)
    torch.manual_seed(0)
    losses = model(IMAGES)
    rego_keys = {f"loss_{n}_rego{k}" for n in ("cls", "bbox", "giou") for k in range(REGO_STAGES)}
    assert rego_keys <= set(losses), sorted(losses)
    sum(losses[k] for k in rego_keys).backward()
    silent = [n for n, p in model.rego.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent
    # REGO starts from the decoder's detached boxes, but its losses train the decoder through its states.
    decoder = [p.grad for p in model.decoder.parameters() if p.grad is not None]
    assert decoder and any(g.abs().sum() > 0 for g in decoder)


@pytest.mark.parametrize("host", HOSTS)
def test_rego_gives_the_output_at_inference_and_can_be_left_out(host):
    model = build(host).eval()
    plain = build(host, rego_stages=0).eval()
    # strict: the host's parameters are exactly those of the model without REGO
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("rego.")})
    with torch.no_grad():
        refined = model(IMAGES)
        model.rego.at_inference = False
        skipped = model(IMAGES)
        reference = plain(IMAGES)
    for a, b, r in zip(skipped, reference, refined, strict=True):
        torch.testing.assert_close(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor, rtol=0, atol=0)
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores, rtol=0, atol=0)
        assert len(r["instances"]) and not (
            len(r["instances"]) == len(a["instances"]) and torch.equal(r["instances"].scores, a["instances"].scores)
        )


@pytest.mark.parametrize(
    "config",
    [
        "SparseRCNN/recursivedet_R50_300pro_3x.py",
        "DiffusionDet/recursivedet_diffusiondet_R50_500pro_60ep.py",
        "AdaMixer/recursivedet_adamixer_R50_300pro_3x.py",
    ],
)
def test_rego_override_applies_to_every_hosts_configs(config):
    cfg = load_config(get_config_file(config), ["model.rego.num_stages=3"])
    assert cfg.model.rego.num_stages == 3
    assert cfg.model.rego.dim == cfg.model.decoder.stage.dim
    assert cfg.model.rego.num_classes == cfg.model.decoder.stage.num_classes


@pytest.mark.parametrize("host", HOSTS)
def test_every_host_keeps_to_the_contract(host):
    """A host supplies its queries and decoder (``decode``); the base owns ``forward``, targets, loss names and
    REGO, so that a change there reaches every host."""
    from recursivedet.modeling.query_detector import QueryDetector

    cls = type(build(host, rego_stages=0))
    assert issubclass(cls, QueryDetector)
    owned = ("forward", "run_detector", "losses", "prepare_targets", "stage_outputs", "refine", "preprocess_image")
    assert not [name for name in owned if name in vars(cls)]
    assert "decode" in vars(cls)
