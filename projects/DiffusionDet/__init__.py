"""DiffusionDet (Chen, Sun, Song, Luo: *DiffusionDet: Diffusion Model for Object Detection*, ICCV 2023) on the
library's decoder, and RecursiveDet on it (RecursiveDet paper Table 2): modules in ``modeling``, configs in
``configs`` (``recursivedet.model_zoo.get_config("DiffusionDet/<file>")``), the official-checkpoint converter
in ``convert``."""
