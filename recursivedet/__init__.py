"""RecursiveDet for Detectron2."""
