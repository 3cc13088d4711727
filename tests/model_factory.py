"""Small models for fast CPU tests: the real decoder, criterion and meta-architecture (RecursiveDet, Sparse R-CNN,
DiffusionDet) on a tiny backbone; a RecursiveDet whose losses become NaN or infinite on request; running them on
one thread."""

import math
from contextlib import contextmanager
from pathlib import Path

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from detectron2.structures import Boxes, Instances
from detectron2.utils import comm
from torch import nn

from recursivedet.model_zoo import get_config
from recursivedet.projects.SparseRCNN.modeling import RecursiveDet

CONFIG_DIR = Path(__file__).resolve().parents[1] / "projects" / "SparseRCNN" / "configs"


@contextmanager
def one_thread():
    """Tiny models only lose time to thread synchronisation, more so when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    """The model config ``SparseRCNN/models/<name>.py`` shrunk to a CPU-test size (same switches)."""
    cfg = LazyConfig.load(str(CONFIG_DIR / "models" / f"{name}.py"))
    cfg.model.backbone = TinyBackbone(dim)
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.dynamic_dim, stage.num_classes = dim, 4, 64, 8, num_classes
    cfg.model.num_proposals = num_proposals
    return cfg


def set_keys(node, overrides: dict) -> None:
    """Set dotted keys of a config node: ``{"decoder.stage.dim": 32}``."""
    for key, value in overrides.items():
        parent = node
        *path, last = key.split(".")
        for p in path:
            parent = parent[p]
        parent[last] = value


def tiny_model(name: str = "recursivedet", seed: int = 0, **overrides):
    """The model of :func:`tiny_config` with dotted ``overrides`` of its config, built with ``seed``."""
    torch.manual_seed(seed)  # the backbone is built with the config
    cfg = tiny_config(name)
    set_keys(cfg.model, overrides)
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def tiny_diffusiondet_config(
    name: str = "diffusiondet", dim: int = 32, num_classes: int = 3, num_proposals: int = 8, **kw
):
    """``DiffusionDet/models/<name>.py`` at a CPU-test size (same switches); ``kw``: dotted model overrides."""
    cfg = get_config(f"DiffusionDet/models/{name}.py")
    cfg.model.backbone = TinyBackbone(dim)
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.dynamic_dim, stage.num_classes = dim, 4, 64, 8, num_classes
    cfg.model.time_embedding.dim, cfg.model.time_embedding.out_dim = dim, 4 * dim
    cfg.model.num_proposals = num_proposals
    set_keys(cfg.model, kw)
    return cfg


def tiny_diffusiondet(name: str = "diffusiondet", seed: int = 0, **kw):
    """The model of :func:`tiny_diffusiondet_config` (``kw``: its arguments), built with ``seed``."""
    torch.manual_seed(seed)  # the backbone is built with the config
    cfg = tiny_diffusiondet_config(name, **kw)
    torch.manual_seed(seed)
    return instantiate(cfg.model)


def make_input(h: int, w: int, boxes=(), classes=(), seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
    return {"image": image, "instances": inst, "height": h, "width": w}


class NonFiniteRecursiveDet(RecursiveDet):
    """RecursiveDet whose losses ``keys`` are multiplied by ``value`` in training iteration ``at`` (counted by
    this process's training forwards) on process ``rank`` (None: on every process). With ``gradient_only``
    the losses keep their value and get a NaN gradient instead."""

    def __init__(self, *, at: int, keys: list, value: float = math.nan, rank=None, gradient_only=False, **kwargs):
        super().__init__(**kwargs)
        self.at, self.keys, self.value, self.rank, self.gradient_only = at, list(keys), value, rank, gradient_only
        self.calls = 0

    def losses(self, *args, **kwargs):
        losses = super().losses(*args, **kwargs)
        if self.calls == self.at and self.rank in (None, comm.get_rank()):
            for key in self.keys:
                loss = losses[key]
                # gradient_only: the value is loss + 0, the gradient 1 + 0 * (d sqrt(x) / dx at 0 = inf) = nan
                losses[key] = loss + torch.sqrt(loss * 0) if self.gradient_only else loss * self.value
        self.calls += 1
        return losses


def tiny_adamixer_config(name: str = "adamixer", dim: int = 32, num_classes: int = 3, num_proposals: int = 8, **kw):
    """``AdaMixer/models/<name>.py`` at a CPU-test size (same switches); ``kw``: dotted model overrides."""
    cfg = get_config(f"AdaMixer/models/{name}.py")
    cfg.model.backbone = TinyBackbone(dim)
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.num_classes = dim, 4, 64, num_classes
    stage.in_points, stage.out_points = 8, 16
    cfg.model.num_proposals = num_proposals
    set_keys(cfg.model, kw)
    return cfg


def tiny_adamixer(name: str = "adamixer", seed: int = 0, **kw):
    """The model of :func:`tiny_adamixer_config` (``kw``: its arguments), built with ``seed``."""
    torch.manual_seed(seed)  # the backbone is built with the config
    cfg = tiny_adamixer_config(name, **kw)
    torch.manual_seed(seed)
    return instantiate(cfg.model)
