"""Fine-tuning: a checkpoint of another class count loads with its class layers re-initialised (one log line);
an ImageNet checkpoint of a timm backbone loads into the backbone through train.init_checkpoint; the learning
rate follows the batch size when train.reference_batch_size is set; datasets restricted to a split of classes."""

import logging

import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from model_factory import tiny_config, tiny_model
from omegaconf import OmegaConf

from recursivedet.data.class_subset import register_class_subset
from recursivedet.data.coco_register import DatasetError
from recursivedet.engine.checkpoint import Checkpointer, CheckpointError
from recursivedet.engine.finetune import scale_lr_to_batch_size, skipped_tensors_message
from recursivedet.errors import ConfigValueError

torch.set_num_threads(1)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def checkpointer_log():
    handler = Lines()
    logger = logging.getLogger("fvcore.common.checkpoint")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.parametrize("rego_stages", [0, 2])
def test_another_class_count_reinitialises_the_class_layers_and_loads_the_rest(rego_stages, tmp_path, checkpointer_log):
    trained = tiny_model(seed=1, **{"decoder.stage.num_classes": 3, "rego.num_stages": rego_stages})
    path = str(tmp_path / "coco_model.pth")
    torch.save({"model": trained.state_dict()}, path)

    fresh = tiny_model(seed=2, **{"decoder.stage.num_classes": 1, "rego.num_stages": rego_stages})
    model = tiny_model(seed=2, **{"decoder.stage.num_classes": 1, "rego.num_stages": rego_stages})
    Checkpointer(model, strict=False).load(path, checkpointables=[])

    class_keys = [k for k in model.state_dict() if ".class_logits." in k]
    assert len(class_keys) == 2 * (len(model.decoder.stages) + rego_stages)
    for k, v in model.state_dict().items():
        expected = fresh.state_dict()[k] if k in class_keys else trained.state_dict()[k]
        assert torch.equal(v, expected), k
    # the model's own initialisation: focal-loss prior on every class bias
    prior = -torch.log(torch.tensor(99.0))
    assert all(torch.allclose(v, prior) for k, v in model.state_dict().items() if k.endswith("class_logits.bias"))

    skipped = [msg for level, msg in checkpointer_log if "another shape" in msg]
    assert len(skipped) == 1 and "Skip loading" not in " ".join(m for _, m in checkpointer_log)
    assert f"({len(class_keys)} class-layer tensors, for the new class count)" in skipped[0]
    assert all(k in skipped[0] for k in class_keys) and "[3, 32]->[1, 32]" in skipped[0]


def test_the_skipped_tensors_are_counted_by_kind():
    message = skipped_tensors_message(
        "m.pth",
        [
            ("init_proposal_boxes.weight", (300, 4), (100, 4)),
            ("decoder.stages.0.class_logits.bias", (80,), (3,)),
            ("init_proposal_features.weight", (300, 256), (100, 256)),
        ],
    )
    assert "(1 class-layer tensors, for the new class count; 2 other tensors (e.g. the proposals" in message
    assert message.index("class_logits") < message.index("init_proposal_boxes")  # class layers first
    assert "class-layer" not in skipped_tensors_message("m.pth", [("init_proposal_boxes.weight", (3, 4), (1, 4))])


def test_resume_and_evaluation_still_refuse_another_class_count(tmp_path):
    path = str(tmp_path / "model.pth")
    torch.save({"model": tiny_model(**{"decoder.stage.num_classes": 3}).state_dict()}, path)
    with pytest.raises(CheckpointError, match="with another shape"):
        Checkpointer(tiny_model(**{"decoder.stage.num_classes": 1}), strict=True).load(path, checkpointables=[])


def test_an_imagenet_checkpoint_of_the_timm_backbone_loads_into_it(tmp_path, checkpointer_log):
    timm = pytest.importorskip("timm")
    from detectron2.modeling.backbone import FPN
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    from recursivedet.modeling.backbone import TimmBackbone

    cfg = tiny_config()
    cfg.model.backbone = FPN(
        bottom_up=TimmBackbone("resnet18", (1, 2, 3, 4)),
        in_features=["res2", "res3", "res4", "res5"],
        out_channels=32,
        top_block=LastLevelMaxPool(),
    )
    model = instantiate(cfg.model)
    torch.manual_seed(3)
    imagenet = timm.create_model("resnet18").state_dict()
    path = str(tmp_path / "resnet18_imagenet.pth")
    torch.save(imagenet, path)
    head_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    Checkpointer(model, strict=False).load(path, checkpointables=[])
    for k, v in model.backbone.bottom_up.model.state_dict().items():
        assert torch.equal(v, imagenet[k]), k
    assert all(torch.equal(model.state_dict()[k], v) for k, v in head_before.items())
    assert any(
        "ImageNet weights of the model's timm backbone: loaded into backbone.bottom_up" in m
        for _, m in checkpointer_log
    )
    assert any("fc.weight" in m for _, m in checkpointer_log)  # the classifier, left out


def train_cfg(lr=1e-3, batch=4, reference=None):
    return OmegaConf.create(
        {
            "optimizer": {"lr": lr},
            "dataloader": {"train": {"total_batch_size": batch}},
            "train": {"reference_batch_size": reference},
        }
    )


def test_the_learning_rate_follows_the_batch_size_when_a_reference_is_set():
    assert scale_lr_to_batch_size(train_cfg(reference=None)) == 1e-3
    cfg = train_cfg(lr=2.5e-5, batch=8, reference=16)
    assert scale_lr_to_batch_size(cfg) == pytest.approx(1.25e-5)
    assert cfg.optimizer.lr == pytest.approx(1.25e-5)
    assert scale_lr_to_batch_size(cfg) == pytest.approx(1.25e-5)  # once only
    with pytest.raises(ConfigValueError, match="train.reference_batch_size must be a positive integer"):
        scale_lr_to_batch_size(train_cfg(reference=0))


def test_a_class_subset_keeps_its_classes_renumbered_with_their_dataset_ids(dataset_name):
    records = [
        {
            "file_name": f"{i}.png",
            "image_id": i,
            "height": 8,
            "width": 8,
            "annotations": [{"bbox": [0, 0, 2, 2], "bbox_mode": 1, "category_id": c} for c in (0, 1, 2, 1)],
        }
        for i in (1, 2, 3)
    ]
    base, subset, other = dataset_name("base"), dataset_name("subset"), dataset_name("other")
    DatasetCatalog.register(base, lambda: records)
    MetadataCatalog.get(base).set(
        thing_classes=["a", "b", "c"], thing_dataset_id_to_contiguous_id={10: 0, 20: 1, 30: 2}
    )
    register_class_subset(subset, base, ["c", "b"], image_ids=[2, 3])
    register_class_subset(subset, base, ["c", "b"], image_ids=[2, 3])  # again: nothing
    dicts = DatasetCatalog.get(subset)
    assert [d["image_id"] for d in dicts] == [2, 3]
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1, 0, 1]
    meta = MetadataCatalog.get(subset)
    assert meta.thing_classes == ["c", "b"] and meta.thing_dataset_id_to_contiguous_id == {30: 0, 20: 1}
    assert len(records[0]["annotations"]) == 4  # the base dataset is untouched
    with pytest.raises(DatasetError, match="already registered for other data"):
        register_class_subset(subset, base, ["a"])
    with pytest.raises(DatasetError, match=f"must be distinct category names of dataset '{base}'"):
        register_class_subset(other, base, ["d"])
