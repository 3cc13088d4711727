"""Conversion of official Sparse R-CNN / RecursiveDet checkpoints."""

from .convert import CheckpointFormatError, convert_official_state_dict, detect_official_architecture

__all__ = ["CheckpointFormatError", "convert_official_state_dict", "detect_official_architecture"]
