"""LazyConfig files of the Sparse R-CNN host (the library's default), installed as ``recursivedet.configs``.

Load them by name from anywhere with ``recursivedet.model_zoo.get_config("recursivedet_R50_300pro_3x.py")``
or ``train_net.py --config-file recursivedet_R50_300pro_3x.py``; they are not meant to be imported.
"""
