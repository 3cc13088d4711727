"""The LazyConfig parts every host's configs share (``common/``: data, optimizer, schedule, training settings),
installed as ``recursivedet.configs``. The hosts' configs are in their projects (``projects/<Host>/configs/``).

Load any of them by name from anywhere with ``recursivedet.model_zoo.get_config("common/train.py")`` or
``get_config("SparseRCNN/recursivedet_R50_300pro_3x.py")``; they are not meant to be imported.
"""
