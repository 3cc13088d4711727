"""RecursiveDet for Detectron2."""

# Registers the built-in datasets (shapes_train, shapes_val); generates nothing until they are loaded.
from recursivedet import data  # noqa: F401, E402

# Registers the RecursiveDet meta-architecture and the project's backbones with detectron2.
from recursivedet import modeling  # noqa: F401, E402
