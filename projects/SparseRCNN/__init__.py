"""Sparse R-CNN, the host detector of the library: its configs (Sparse R-CNN and RecursiveDet, in
``recursivedet.configs``) are compared here with the official code of both, PeizeSun/SparseR-CNN and
bravezzzzzz/RecursiveDet (``python -m recursivedet.projects.SparseRCNN.side_by_side``)."""
