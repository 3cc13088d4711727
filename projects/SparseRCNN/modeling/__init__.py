"""The Sparse R-CNN host's own module: the detector that gives the library's decoder learned proposal boxes and
features (:class:`RecursiveDet`; plain Sparse R-CNN with every RecursiveDet switch off)."""

from .detector import RecursiveDet, initial_boxes

__all__ = ["RecursiveDet", "initial_boxes"]
