"""Fine-tuning recipe, the comparison: the demo model trained on the novel class only (``shapes_novel_train``:
triangles on 200 images), from the ImageNet backbone alone, for the same 300 iterations as
``shapes_novel_finetune.py``.

The learning rate is given for a total batch of 8 images (``train.reference_batch_size``) and follows
``dataloader.train.total_batch_size`` linearly: ``dataloader.train.total_batch_size=4`` trains at half of it."""

from recursivedet.model_zoo import get_config

from ..recursivedet_shapes_demo import lr_multiplier, model, optimizer, train

split = get_config("common/data/shapes_class_split.py")
dataloader = split.dataloader

dataloader.train.dataset.names = "shapes_novel_train"
dataloader.test.dataset.names = "shapes_novel_val"
model.decoder.stage.num_classes = len(split.classes.novel)

optimizer.lr = 1e-3
train.reference_batch_size = 8
train.max_iter = 300
lr_multiplier.steps = [240, 280]
train.checkpointer.period = 300
train.output_dir = "./output/finetune/novel_from_imagenet"

del split

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
