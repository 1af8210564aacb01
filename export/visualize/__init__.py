"""Top-9 patches per unit: what a trained ConvNet's layers respond to."""

from .core import ReceptiveField, VisualizeError, crop_patch, grid, receptive_fields, top_patches

__all__ = ["ReceptiveField", "VisualizeError", "crop_patch", "grid", "receptive_fields",
           "top_patches"]
