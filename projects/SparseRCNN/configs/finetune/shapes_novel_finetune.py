"""Fine-tuning recipe, step 2: the model of ``shapes_base_pretrain.py`` (3 base classes) fine-tuned on the novel
class (``shapes_novel_train``: triangles on 200 images) for 300 iterations. The class layers of every stage do
not fit the new class count: they are re-initialised and listed in one log line; everything else starts from the
checkpoint. Same recipe as ``shapes_novel_from_imagenet.py`` otherwise.

    python train_net.py --config-file SparseRCNN/finetune/shapes_base_pretrain.py
    python train_net.py --config-file SparseRCNN/finetune/shapes_novel_finetune.py
"""

from .shapes_novel_from_imagenet import dataloader, lr_multiplier, model, optimizer, train

train.init_checkpoint = "./output/finetune/base_pretrain/model_final.pth"
train.output_dir = "./output/finetune/novel_finetune"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
