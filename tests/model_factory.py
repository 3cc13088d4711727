"""Small models for fast CPU tests: the real decoder, criterion and meta-architecture on a tiny backbone."""

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.structures import Boxes, Instances
from torch import nn

CONFIG_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "configs"


class TinyBackbone(Backbone):
    """Four strided convs giving p2-p5 (strides 4-32) with ``channels`` channels each."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=4, padding=1), nn.ReLU())
        self.downs = nn.ModuleList(nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(3))
        self._channels = channels

    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self):
        return {f"p{i}": ShapeSpec(channels=self._channels, stride=2**i) for i in range(2, 6)}

    def forward(self, x):
        out = {"p2": self.stem(x)}
        for i, down in enumerate(self.downs, start=3):
            out[f"p{i}"] = torch.relu(down(out[f"p{i - 1}"]))
        return out


def tiny_config(name: str = "recursivedet", dim: int = 32, num_classes: int = 3, num_proposals: int = 8):
    """The model config ``configs/models/<name>.py`` shrunk to a CPU-test size (same switches)."""
    cfg = LazyConfig.load(str(CONFIG_DIR / "models" / f"{name}.py"))
    cfg.model.backbone = TinyBackbone(dim)
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.dynamic_dim, stage.num_classes = dim, 4, 64, 8, num_classes
    cfg.model.num_proposals = num_proposals
    return cfg


def tiny_model(name: str = "recursivedet", seed: int = 0, **overrides):
    torch.manual_seed(seed)  # the backbone is built with the config
    cfg = tiny_config(name)
    for key, value in overrides.items():
        node = cfg.model
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def make_input(h: int, w: int, boxes=(), classes=(), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    return {"image": image, "instances": inst, "height": h, "width": w}
