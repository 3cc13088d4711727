"""Every model switch acts: turned on where it is off, on the same weights, it changes what the model computes.

Each case builds the model with the switch off and with it on, in float64, randomises the first model's weights
(so that zero-initialised layers hide no effect) and gives the second the same values for every parameter the
two share; what only the second has keeps its own random values. The switch acts when the outputs (detections
at inference, or the training loss for switches of the loss) differ far above float64 rounding, and the
parameters that it adds receive non-zero gradients. Switches of the initialisation compare freshly built models.

The official form of the dynamic-conv box PE is the counter-example these tests exist for: its term p_f . p_k is
one number per RoI element on all hidden channels, which the next LayerNorm removes, and every centerness form only
scales it. Its test states that it is inert.
"""

import math
from contextlib import contextmanager

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from model_factory import TinyBackbone, make_input, one_thread, tiny_adamixer_config, tiny_diffusiondet_config

from recursivedet.model_zoo import get_config
from recursivedet.projects.SparseRCNN.modeling import RecursiveDet
from recursivedet.switches import PAPER_SWITCHES

# Far above float64 rounding (1e-15 here) and far below any real effect (1e-2 and more on these models).
ACTS = 1e-6
INERT = 1e-10


def recursivedet_config():
    """RecursiveDet as the official code (RecSt-dagger, RecDy with one pass in stage 1, both box PEs, static
    centerness, 6 stages) from ``SparseRCNN/recursivedet_R50_100pro_3x.py``, at a CPU-test size."""
    cfg = get_config("SparseRCNN/recursivedet_R50_100pro_3x.py")
    cfg.model.backbone = TinyBackbone(16)
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.dynamic_dim, stage.num_classes = 16, 2, 32, 4, 3
    cfg.model.num_proposals = 6
    cfg.model.proposal_box_init = "grid"  # distinct boxes: identical ones give every key the same box PE
    return cfg


def diffusiondet_config():
    return tiny_diffusiondet_config("recursivedet_diffusiondet", dim=16, num_proposals=6)


def adamixer_config():
    return tiny_adamixer_config("recursivedet_adamixer", dim=16, num_proposals=6)


HOSTS = {"recursivedet": recursivedet_config, "diffusiondet": diffusiondet_config, "adamixer": adamixer_config}


@contextmanager
def float64_on_one_thread():
    """Models built and run in float64 (constants made at run time too), on one thread (tiny models)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with one_thread():
            yield
    finally:
        torch.set_default_dtype(previous)


def build(host: str, overrides: list[str], seed: int = 0):
    cfg = LazyConfig.apply_overrides(HOSTS[host](), overrides)
    torch.manual_seed(seed)
    return instantiate(cfg.model).double()


def randomise(model, seed: int) -> None:
    """Every weight drawn at the scale of its fan-in, every vector (biases, norms, masks) moved by 0.1; the
    learned initial boxes stay, so that they remain boxes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if name.startswith("init_proposal_boxes"):
                continue
            if p.dim() > 1:
                p.copy_(noise / math.sqrt(p[0].numel()))
            else:
                p.add_(0.1 * noise)


def share_weights(source, target) -> list[str]:
    """Copy the values of every parameter and buffer that ``target`` shares with ``source`` (same name and shape);
    returns the names of ``target``'s parameters that ``source`` does not have. (Copies tensor by tensor: a
    state-dict load would run the modules' own conversions between the forms.)"""
    mine = dict(source.named_parameters()) | dict(source.named_buffers())
    own = []
    with torch.no_grad():
        for name, t in list(target.named_parameters()) + list(target.named_buffers()):
            if name in mine and mine[name].shape == t.shape:
                t.copy_(mine[name])
            elif isinstance(t, torch.nn.Parameter):
                own.append(name)
    return own


IMAGE = make_input(64, 96, seed=3)["image"]


def detections(model) -> torch.Tensor:
    """What the model predicts for one image, as one vector: the scores and boxes of its detections (RecursiveDet,
    whose switches include REGO and the inference depth), or every stage's logits and boxes (the other hosts,
    whose detections of a random model can all fall under the score threshold)."""
    inputs = [{"image": IMAGE}]
    with torch.no_grad():
        model.eval()
        if isinstance(model, RecursiveDet):
            out = model(inputs)[0]["instances"]
            return torch.cat((out.scores, out.pred_boxes.tensor.flatten()))
        images = model.preprocess_image(inputs)
        stages = model.run_head(images, model.run_backbone(images))
        return torch.cat([t.flatten() for stage in stages for t in stage])


def training_loss(model) -> torch.Tensor:
    """The total training loss on one image with two objects (its boxes in the model's dtype)."""
    x = make_input(64, 96, [[8, 8, 40, 40], [30, 20, 90, 60]], [1, 2], seed=3)
    boxes = x["instances"].gt_boxes
    boxes.tensor = boxes.tensor.to(torch.get_default_dtype())  # Boxes() itself would make them float32
    return sum(model.train()([x]).values())


def difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.inf if a.shape != b.shape else (a - b).abs().max().item()


def paired(host: str, off: list[str], on: list[str]):
    """The model with ``off`` (randomised) and with ``on`` (the same values where they share parameters), and the
    names of the parameters only ``on`` has."""
    model_off = build(host, off)
    randomise(model_off, seed=1)
    model_on = build(host, on)
    randomise(model_on, seed=2)
    return model_off, model_on, share_weights(model_off, model_on)


def case(key: str, off, on, what: str = "detections", host: str = "recursivedet", extra=()):
    """(host, off overrides, on overrides, what): ``key`` set to ``off`` and to ``on``, with ``extra`` in both.
    what: "detections" (inference), "loss" (a switch of the training loss) or "init" (of the initialisation)."""
    return host, [*extra, f"{key}={off}"], [*extra, f"{key}={on}"], what


STAGE = "model.decoder.stage."
NO_CENTERNESS = [f"{STAGE}centerness=none"]
REGO = ["model.rego.num_stages=3"]  # REGO's other switches act on a model with REGO stages
CASES = [
    case("model.decoder.stage_sharing", "none", "all"),
    case("model.decoder.stage_sharing", "none", "all_but_first"),
    case("model.decoder.dynamic_passes", 1, 2),
    case("model.decoder.first_stage_dynamic_passes", 2, 1),
    case(f"{STAGE}box_pe_self_attention", False, True),
    case(f"{STAGE}box_pe_dynamic_conv", False, True, extra=NO_CENTERNESS),
    *[case(f"{STAGE}centerness", "none", mode) for mode in ("static", "learnable", "adjust")],
    case(f"{STAGE}dynamic_conv_pe_form", "official", "per_channel"),
    case("model.decoder.num_stages", 6, 3),
    case("model.decoder.inference_stages", "null", 8),
    case("model.num_proposals", 6, 8),
    case("model.deep_supervision", False, True, "loss"),
    case(f"{STAGE}box_refinement", "sigmoid", "deltas"),
    case("model.criterion.l1_box_format", "cxcywh", "xyxy", "loss"),
    case("model.decoder.box_delta_init", "xavier", "zero", "init"),
    case("model.proposal_box_init", "image", "grid", "init"),
    case("model.rego.num_stages", 0, 3),
    case("model.rego.glimpse_scale", 1.0, 1.5, extra=REGO),
    case("model.rego.alphas", "null", "[1,1,1]", extra=REGO),
    case("model.rego.aux_losses", False, True, "loss", extra=REGO),
    case("model.rego.at_inference", True, False, extra=REGO),
    # The same PE switches on the other hosts that have them.
    *[case(f"{STAGE}box_pe_self_attention", False, True, host=host) for host in ("diffusiondet", "adamixer")],
    case(f"{STAGE}box_pe_dynamic_conv", False, True, host="diffusiondet", extra=NO_CENTERNESS),
    case(f"{STAGE}box_pe_dynamic_conv", False, True, host="adamixer"),
    *[case(f"{STAGE}centerness", "none", mode, host="diffusiondet") for mode in ("static", "learnable", "adjust")],
]


def case_id(case) -> str:
    host, off, on, what = case
    return "-".join([host, *[o for o in on if o not in off], what])


def test_every_switch_of_the_readme_table_has_a_case():
    keys = {o.split("=")[0] for _, _, o in PAPER_SWITCHES}
    tested = {override.split("=")[0] for host, _, on, _ in CASES if host == "recursivedet" for override in on}
    assert keys <= tested, f"switches without a case: {sorted(keys - tested)}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_switch_changes_the_outputs_on_the_same_weights(case):
    host, off, on, what = case
    assert set(off) != set(on), case
    with float64_on_one_thread():
        if what == "init":
            a, b = build(host, off), build(host, on)
            assert difference(detections(a), detections(b)) > ACTS, f"{on} changes nothing at initialisation"
            return
        model_off, model_on, own = paired(host, off, on)
        if what == "loss":
            assert abs(training_loss(model_off) - training_loss(model_on)).item() > ACTS, f"{on} changes no loss"
        else:
            assert difference(detections(model_off), detections(model_on)) > ACTS, f"{on} changes no detection"
        # The parameters the switch adds are trained: each receives a non-zero gradient.
        training_loss(model_on).backward()
        params = dict(model_on.named_parameters())
        # A bias added to every key shifts each query's attention logits equally, which the softmax removes; on
        # AdaMixer, b_f . p_k is one number for all of a query's points and channels, which the mixing's
        # LayerNorm over points x channels removes.
        trained = [n for n in own if not n.endswith(("k_pos_proj.bias", "mixing_pe.roi_pos_proj.bias"))]
        without = [n for n in trained if params[n].grad is None or params[n].grad.abs().max() <= ACTS]
        assert not without, f"{on}: parameters without a gradient: {without}"


@pytest.mark.parametrize("host", ["recursivedet", "diffusiondet"])
def test_the_official_form_of_the_dynamic_conv_box_pe_is_inert(host):
    """The official term (and every centerness on it) is removed by the dynamic conv's LayerNorm: with it or
    without it, the same weights give the same detections to float64 rounding, and its parameters receive
    gradients of rounding size. This is why the per-channel form exists and is the default."""
    off = ["model.decoder.stage.box_pe_dynamic_conv=False", "model.decoder.stage.centerness=none"]
    form = "model.decoder.stage.dynamic_conv_pe_form=official"
    with float64_on_one_thread():
        for on in (
            ["model.decoder.stage.box_pe_dynamic_conv=True", "model.decoder.stage.centerness=none", form],
            *[
                ["model.decoder.stage.box_pe_dynamic_conv=True", f"model.decoder.stage.centerness={m}", form]
                for m in (
                    "static",
                    "learnable",
                    "adjust",
                )
            ],
        ):
            model_off, model_on, own = paired(host, off, on)
            assert own and all("dynamic_conv" in n for n in own)
            assert difference(detections(model_off), detections(model_on)) < INERT, on
            training_loss(model_on).backward()
            params = dict(model_on.named_parameters())
            assert max(params[n].grad.abs().max().item() for n in own) < INERT, on


def test_the_per_channel_form_with_zero_channels_is_the_official_form():
    """Official weights give official outputs in the per-channel form: W = 0 leaves only the official term."""
    with float64_on_one_thread():
        official = build("recursivedet", ["model.decoder.stage.dynamic_conv_pe_form=official"])
        randomise(official, seed=1)
        per_channel = build("recursivedet", [])
        per_channel.load_state_dict(official.state_dict())  # W is missing: it loads as zeros
        assert all((s.dynamic_conv.position_channels == 0).all() for s in per_channel.decoder.stages)
        assert difference(detections(official), detections(per_channel)) < INERT
