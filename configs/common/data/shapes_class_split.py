"""Two splits of the classes of the built-in shapes data, for the fine-tuning configs (``SparseRCNN/finetune/``):
base classes rectangle, circle and ellipse on training images 1-800 (``shapes_base_train``) and the novel class
triangle on the other 200 (``shapes_novel_train``), each evaluated on ``shapes_val`` restricted to its classes
(``shapes_base_val``, ``shapes_novel_val``). Objects of the other split's classes are background."""

from recursivedet.data import register_builtin_shapes
from recursivedet.data.class_subset import register_class_subset

from .shapes import dataloader

BASE_CLASSES = ["rectangle", "circle", "ellipse"]
NOVEL_CLASSES = ["triangle"]
classes = dict(base=BASE_CLASSES, novel=NOVEL_CLASSES)  # for configs that load this one by name

register_builtin_shapes()
register_class_subset("shapes_base_train", "shapes_train", BASE_CLASSES, image_ids=range(1, 801))
register_class_subset("shapes_novel_train", "shapes_train", NOVEL_CLASSES, image_ids=range(801, 1001))
register_class_subset("shapes_base_val", "shapes_val", BASE_CLASSES)
register_class_subset("shapes_novel_val", "shapes_val", NOVEL_CLASSES)

__all__ = ["classes", "dataloader"]
