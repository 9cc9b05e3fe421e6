"""mambaseg: self-configuring medical image segmentation with state-space (Mamba) networks."""

__version__ = "0.1.0"
