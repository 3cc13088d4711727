"""Sparse R-CNN, the paper's first host: its detector (``modeling``: learned proposal boxes and features), its
configs (Sparse R-CNN and RecursiveDet, the paper's ablations, REGO, fine-tuning, the shapes demo; names
``SparseRCNN/<path>``), the converter of official checkpoints and the comparison with the official code of
PeizeSun/SparseR-CNN and bravezzzzzz/RecursiveDet."""
