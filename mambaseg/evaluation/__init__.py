"""Segmentation metrics and summaries, and the choice of runs and postprocessing from cross-validation."""
