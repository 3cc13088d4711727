"""RecursiveDet for Detectron2."""

import warnings

# detectron2 (box_regression) and fvcore (focal_loss) call torch.jit.script at import, which recent PyTorch
# answers with a FutureWarning for each: not actionable by a user of this project. The filter has to be in
# place before detectron2 is first imported, which the imports below (and train_net.py's) do; it is global
# (a filter cannot tell who called torch.jit.script), but matches only this message and category.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

# Importing these registers the built-in datasets shapes_train and shapes_val with detectron2 (generated on
# first load, not here).
from recursivedet import data, modeling  # noqa: E402, F401
