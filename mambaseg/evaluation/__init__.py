"""Segmentation metrics and summaries."""
