"""Fine-tuning recipe, step 1: the demo model (``SparseRCNN/recursivedet_shapes_demo.py``) trained on the three
base classes of the shapes data (``shapes_base_train``: 800 images), the stand-in for a model trained on COCO."""

from recursivedet.model_zoo import get_config

from ..recursivedet_shapes_demo import lr_multiplier, model, optimizer, train

split = get_config("common/data/shapes_class_split.py")
dataloader = split.dataloader

dataloader.train.dataset.names = "shapes_base_train"
dataloader.test.dataset.names = "shapes_base_val"
model.decoder.stage.num_classes = len(split.classes.base)

train.max_iter = 600
lr_multiplier.steps = [480, 560]
train.checkpointer.period = 600
train.output_dir = "./output/finetune/base_pretrain"

del split

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
