"""mambaseg: self-configuring medical image segmentation with state-space (Mamba) networks.

``mambaseg.Predictor`` (prediction as a library call) is ``mambaseg.workspace.Predictor``, imported on first use so
that ``import mambaseg`` stays light.
"""

__version__ = "0.1.0"

__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from mambaseg.workspace.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'mambaseg' has no attribute {name!r}")
