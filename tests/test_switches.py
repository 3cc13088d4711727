"""Every paper switch is documented in the README and in --help, and builds a model."""

from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from model_factory import TinyBackbone

from recursivedet.switches import PAPER_SWITCHES, switches_help

ROOT = Path(__file__).resolve().parents[1]


def test_readme_and_help_list_every_switch():
    readme = (ROOT / "README.md").read_text()
    help_text = switches_help()
    for factor, _term, override in PAPER_SWITCHES:
        key = override.split("=")[0]
        assert f"`{key}=" in readme, f"README misses {key}"
        assert key in help_text and factor in help_text


@pytest.mark.parametrize("override", [o for _, _, o in PAPER_SWITCHES], ids=lambda o: o.split("=")[0])
def test_each_switch_builds_a_working_model(override):
    key, values = override.split("=")
    cfg = LazyConfig.load(str(ROOT / "configs" / "recursivedet_R50_100pro_3x.py"))
    cfg.model.backbone = TinyBackbone(32)
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.dynamic_dim, stage.num_classes = 32, 4, 64, 8, 3
    if key.startswith("model.rego."):  # REGO's other switches act on a model with REGO stages
        cfg.model.rego.num_stages = 3
    for value in values.split("|"):
        cfg = LazyConfig.apply_overrides(cfg, [f"{key}={value}"])
        model = instantiate(cfg.model).eval()
        with torch.no_grad():
            out = model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
        assert len(out) == 1
