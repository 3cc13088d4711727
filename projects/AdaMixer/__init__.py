"""AdaMixer (Gao, Wang, Wu, Wang: *AdaMixer: A Fast-Converging Query-Based Object Detector*, CVPR 2022) on this
library, and RecursiveDet on it (RecursiveDet paper Table 2): modules in ``modeling``, configs in ``configs``
(``recursivedet.model_zoo.get_config("AdaMixer/<file>")``), the official-checkpoint converter in ``convert``."""
