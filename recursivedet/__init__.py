"""RecursiveDet for Detectron2."""

# Importing these registers, with detectron2, the built-in datasets shapes_train and shapes_val (generated on
# first load, not here), the RecursiveDet meta-architecture and the project's backbones.
from recursivedet import data, modeling  # noqa: F401
